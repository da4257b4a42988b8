// Command lines of llorch's binaries on top of absl flags. A command (one
// binary, or one subcommand of a binary) names the absl flags it accepts;
// ParseFlags sets exactly those from the arguments and rejects every other
// flag, so subcommands of one binary keep separate flag sets although absl
// flags are global. On the command line `--a-b` and `--a_b` are the same flag
// (absl names use underscores); `--flag=value` and `--flag value` both work,
// booleans also as `--flag` and `--flag=true|false`. Numbers are range-checked
// (the flag type's range, narrowed by the command), with the flag and the
// range named in the error.
#ifndef LLORCH_COMMON_CLI_FLAGS_H_
#define LLORCH_COMMON_CLI_FLAGS_H_

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace llorch {
namespace cli {

// A repeatable string flag: every occurrence on the command line adds one
// value (commas are kept, unlike absl's std::vector<std::string> flags).
// Declare it as ABSL_FLAG(cli::StringList, name, {}, "help").
struct StringList {
  std::vector<std::string> values;
};
// ParseFlags hands all occurrences to absl at once, each value preceded by a
// NUL byte (which argv strings cannot contain); text without a leading NUL
// is one value.
bool AbslParseFlag(absl::string_view text, StringList* list, std::string* error);
std::string AbslUnparseFlag(const StringList& list);

// How help text and errors spell flag names.
enum class Spelling { kDashes, kUnderscores };

// One flag a command accepts.
struct FlagSpec {
  // The name on the command line, either spelling: "max_tokens".
  FlagSpec(const char* name);  // NOLINT: lists of specs read as lists of names
  explicit FlagSpec(std::string name);

  // The absl flag behind it when its name differs (several subcommands of
  // one binary with one flag name but different defaults).
  FlagSpec& Reads(absl::string_view absl_name);
  // Numeric flags: accepted values, inclusive unless said otherwise.
  FlagSpec& AtLeast(double value);
  FlagSpec& Above(double value);  // exclusive
  FlagSpec& AtMost(double value);
  // The placeholder for the value in help: "PATH" (default: N, X or TEXT).
  FlagSpec& Value(absl::string_view placeholder);

  std::string name;       // underscores
  std::string absl_name;  // underscores
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
  std::string placeholder;
};

// A binary's command line, or one subcommand's.
struct CommandSpec {
  std::string program;  // as typed: "llorch run", "llorch-worker"
  std::string summary;  // one line: what it does
  std::string usage;    // synopsis after "usage: "; may span lines
  std::vector<FlagSpec> flags;
  Spelling spelling = Spelling::kDashes;
};

// Every absl flag defined in the source file whose path ends with `file` (a
// binary's own flags, not those of the libraries it links): first those in
// `listed`, in that order and with their ranges, then the others by name.
// A flag added to the file is accepted without being listed; a listed one
// not defined there is left out.
std::vector<FlagSpec> FlagsOf(absl::string_view file, const std::vector<FlagSpec>& listed);

// "--max-tokens" -> "max_tokens" (leading dashes go, inner dashes become underscores).
std::string NormalizeFlagName(absl::string_view name);
// "max_tokens" -> "--max-tokens" (kDashes) or "--max_tokens" (kUnderscores).
std::string DisplayFlagName(absl::string_view name, Spelling spelling);

// What ParseFlags found.
enum class Parsed { kFlags, kHelp };

// Sets the command's absl flags from `args` (the arguments after the program
// or subcommand name). kHelp when --help or -h is among them (nothing else is
// checked then); InvalidArgument naming the offending flag or argument;
// Internal when a FlagSpec names no absl flag.
absl::StatusOr<Parsed> ParseFlags(const CommandSpec& command, absl::Span<const std::string> args);

// Whether the last ParseFlags set `flag` from the command line (even to an
// empty string or its default).
bool WasGiven(const absl::CommandLineFlag& flag);
template <typename T>
bool WasGiven(const absl::Flag<T>& flag) {
  return WasGiven(absl::GetFlagReflectionHandle(flag));
}

// Usage, summary, and each flag of the command with its help, default and range.
absl::StatusOr<std::string> HelpText(const CommandSpec& command);

// ParseFlags for main(): prints the help to stdout (returns 0) or the error
// with a pointer to --help to stderr (returns 2); -1: the flags are set, go on.
int ParseFlagsForMain(const CommandSpec& command, absl::Span<const std::string> args);

// One subcommand of a binary such as `llorch run`.
struct Subcommand {
  std::string name;  // "run"
  CommandSpec spec;  // spec.program is "<binary> <name>"
  std::function<absl::Status()> run;  // after its flags are set
};

// `program SUBCOMMAND [flags]`: parses the subcommand's flags and runs it.
// `program help`, `program --help` and `program -h` list the subcommands;
// `program help SUBCOMMAND` is `program SUBCOMMAND --help`. Returns the exit
// code: 0, or 2 for a usage error or a failed subcommand (one line on stderr,
// "<program>: <message>").
int DispatchSubcommand(absl::string_view program, absl::Span<const Subcommand> subcommands,
                       absl::Span<const std::string> args);

}  // namespace cli
}  // namespace llorch

#endif  // LLORCH_COMMON_CLI_FLAGS_H_
