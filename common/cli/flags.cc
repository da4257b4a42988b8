#include "common/cli/flags.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace llorch {
namespace cli {

bool AbslParseFlag(absl::string_view text, StringList* list, std::string* /*error*/) {
  list->values.clear();
  if (text.empty()) return true;
  if (text[0] != '\0') {
    list->values.emplace_back(text);
    return true;
  }
  for (absl::string_view value : absl::StrSplit(text.substr(1), '\0')) {
    list->values.emplace_back(value);
  }
  return true;
}

std::string AbslUnparseFlag(const StringList& list) {
  std::string text;
  for (const std::string& value : list.values) {
    absl::StrAppend(&text, absl::string_view("\0", 1), value);
  }
  return text;
}

FlagSpec::FlagSpec(const char* name) : FlagSpec(std::string(name)) {}

FlagSpec::FlagSpec(std::string flag_name)
    : name(NormalizeFlagName(flag_name)), absl_name(name) {}

FlagSpec& FlagSpec::Reads(absl::string_view flag) {
  absl_name = NormalizeFlagName(flag);
  return *this;
}

FlagSpec& FlagSpec::AtLeast(double value) {
  min = value;
  min_exclusive = false;
  return *this;
}

FlagSpec& FlagSpec::Above(double value) {
  min = value;
  min_exclusive = true;
  return *this;
}

FlagSpec& FlagSpec::AtMost(double value) {
  max = value;
  return *this;
}

FlagSpec& FlagSpec::Value(absl::string_view text) {
  placeholder = std::string(text);
  return *this;
}

std::vector<FlagSpec> FlagsOf(absl::string_view file, const std::vector<FlagSpec>& listed) {
  std::set<std::string> defined;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!flag->IsRetired() && absl::EndsWith(flag->Filename(), file)) {
      defined.emplace(name);
    }
  }
  std::vector<FlagSpec> flags;
  for (const FlagSpec& spec : listed) {
    if (defined.erase(spec.absl_name) > 0) flags.push_back(spec);
  }
  for (const std::string& name : defined) flags.emplace_back(name);
  return flags;
}

std::string NormalizeFlagName(absl::string_view name) {
  return absl::StrReplaceAll(name.substr(std::min(name.find_first_not_of('-'), name.size())),
                             {{"-", "_"}});
}

std::string DisplayFlagName(absl::string_view name, Spelling spelling) {
  const std::string normal = NormalizeFlagName(name);
  return absl::StrCat("--", spelling == Spelling::kDashes
                                ? absl::StrReplaceAll(normal, {{"_", "-"}})
                                : normal);
}

namespace {

// ---- Numbers: which flags hold one, their type's range, their value. ----

struct NumberType {
  bool integer = false;
  double min = 0;
  double max = 0;
  std::string min_text;  // exact, for integers beyond double's precision
  std::string max_text;
  std::optional<double> (*read)(const absl::CommandLineFlag&) = nullptr;
};

template <typename T>
bool HoldsType(const absl::CommandLineFlag& flag) {
  return flag.IsOfType<T>() || flag.IsOfType<std::optional<T>>();
}

template <typename T>
std::optional<double> ReadNumber(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<T>()) return static_cast<double>(*flag.TryGet<T>());
  absl::optional<std::optional<T>> value = flag.TryGet<std::optional<T>>();
  if (!value.has_value() || !value->has_value()) return std::nullopt;
  return static_cast<double>(**value);
}

template <typename T>
std::optional<NumberType> NumberTypeAs(const absl::CommandLineFlag& flag) {
  if (!HoldsType<T>(flag)) return std::nullopt;
  using Limits = std::numeric_limits<T>;
  NumberType type;
  type.integer = std::is_integral_v<T>;
  type.min = static_cast<double>(Limits::lowest());
  type.max = static_cast<double>(Limits::max());
  type.min_text = absl::StrCat(Limits::lowest());
  type.max_text = absl::StrCat(Limits::max());
  type.read = &ReadNumber<T>;
  return type;
}

std::optional<NumberType> NumberTypeOf(const absl::CommandLineFlag& flag) {
  for (auto as : {&NumberTypeAs<int16_t>, &NumberTypeAs<uint16_t>, &NumberTypeAs<int32_t>,
                  &NumberTypeAs<uint32_t>, &NumberTypeAs<int64_t>, &NumberTypeAs<uint64_t>,
                  &NumberTypeAs<float>, &NumberTypeAs<double>}) {
    if (std::optional<NumberType> type = as(flag)) return type;
  }
  return std::nullopt;
}

std::string Bound(double value, double type_bound, const std::string& type_text, bool integer) {
  if (value == type_bound) return type_text;
  return integer ? absl::StrCat(static_cast<int64_t>(value)) : absl::StrCat(value);
}

// "an integer in [1, 2147483647]", "a number in (0, 1]", "a number >= 0";
// `brief` leaves the type's own bounds out ("an integer >= 1").
std::string RangeText(const FlagSpec& spec, const NumberType& type, bool brief = false) {
  const double lo = std::max(spec.min, type.min);
  const double hi = std::min(spec.max, type.max);
  const std::string lo_text = Bound(lo, type.min, type.min_text, type.integer);
  const std::string hi_text = Bound(hi, type.max, type.max_text, type.integer);
  const bool has_lo = lo > type.min, has_hi = hi < type.max;
  if (type.integer && !(brief && has_lo != has_hi)) {
    return absl::StrCat("an integer in [", lo_text, ", ", hi_text, "]");
  }
  const char* kind = type.integer ? "an integer" : "a number";
  if (has_lo && has_hi) {
    return absl::StrCat(kind, " in ", spec.min_exclusive ? "(" : "[", lo_text, ", ", hi_text,
                        "]");
  }
  if (has_lo) return absl::StrCat(kind, spec.min_exclusive ? " > " : " >= ", lo_text);
  if (has_hi) return absl::StrCat(kind, " <= ", hi_text);
  return "a finite number";
}

bool InRange(const FlagSpec& spec, const NumberType& type, double value) {
  if (!type.integer && !std::isfinite(value)) return false;
  if (spec.min_exclusive ? !(value > spec.min) : !(value >= spec.min)) return false;
  return value <= spec.max;
}

// ---- Parsing. ----

struct Occurrence {
  const FlagSpec* spec;
  absl::CommandLineFlag* flag;
  std::string value;
};

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

const FlagSpec* FindSpec(const CommandSpec& command, absl::string_view name) {
  for (const FlagSpec& spec : command.flags) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

absl::StatusOr<absl::CommandLineFlag*> FindFlag(const FlagSpec& spec) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(spec.absl_name);
  if (flag == nullptr) {
    return absl::InternalError(absl::StrCat("no absl flag '", spec.absl_name, "' behind --",
                                            spec.name));
  }
  return flag;
}

// The flags the last ParseFlags set.
std::set<const absl::CommandLineFlag*>& Given() {
  static auto* given = new std::set<const absl::CommandLineFlag*>;
  return *given;
}

bool IsHelp(absl::string_view arg) { return arg == "--help" || arg == "-h"; }

// Reads the flag at args[*i] (and its value, if separate), advancing *i.
absl::StatusOr<Occurrence> ReadOccurrence(const CommandSpec& command,
                                          absl::Span<const std::string> args, size_t* i) {
  const std::string& arg = args[*i];
  if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
    if (arg.size() > 1 && arg[0] == '-') return Invalid(absl::StrCat("unknown flag ", arg));
    return Invalid(absl::StrCat("unexpected argument '", arg, "'"));
  }
  const size_t equals = arg.find('=');
  const absl::string_view typed = absl::string_view(arg).substr(0, equals);
  const FlagSpec* spec = FindSpec(command, NormalizeFlagName(typed));
  if (spec == nullptr) return Invalid(absl::StrCat("unknown flag ", typed));
  absl::StatusOr<absl::CommandLineFlag*> flag = FindFlag(*spec);
  if (!flag.ok()) return flag.status();
  Occurrence occurrence{spec, *flag, ""};
  if (equals != std::string::npos) {
    occurrence.value = arg.substr(equals + 1);
  } else if ((*flag)->IsOfType<bool>()) {
    occurrence.value = "true";
  } else if (*i + 1 < args.size()) {
    occurrence.value = args[++*i];
  } else {
    return Invalid(absl::StrCat(DisplayFlagName(spec->name, command.spelling), " needs a value"));
  }
  return occurrence;
}

// Sets the flag, checking numbers against the spec's and the type's range;
// leaves it as it was on an error.
absl::Status Apply(const CommandSpec& command, const Occurrence& o) {
  const std::string name = DisplayFlagName(o.spec->name, command.spelling);
  const std::optional<NumberType> number = NumberTypeOf(*o.flag);
  const std::string previous = o.flag->CurrentValue();
  std::string error;
  const bool parsed = o.flag->ParseFrom(o.value, &error);
  if (number.has_value()) {
    const std::optional<double> value = parsed ? number->read(*o.flag) : std::nullopt;
    if (!parsed || (value.has_value() && !InRange(*o.spec, *number, *value))) {
      if (parsed) o.flag->ParseFrom(previous, &error);  // out of range: as before
      return Invalid(absl::StrCat(name, " must be ", RangeText(*o.spec, *number), ", got '",
                                  o.value, "'"));
    }
    return absl::OkStatus();
  }
  if (parsed) return absl::OkStatus();
  const size_t detail = error.find("; ");
  return Invalid(absl::StrCat(name, ": invalid value '", o.value, "'",
                              detail == std::string::npos ? "" : error.substr(detail)));
}

// All occurrences of a repeatable flag become one value, each part after a NUL.
std::vector<Occurrence> MergeLists(std::vector<Occurrence> occurrences) {
  std::vector<Occurrence> merged;
  for (Occurrence& o : occurrences) {
    if (!o.flag->IsOfType<StringList>()) {
      merged.push_back(std::move(o));
      continue;
    }
    auto same = std::find_if(merged.begin(), merged.end(),
                             [&](const Occurrence& m) { return m.flag == o.flag; });
    if (same == merged.end()) {
      same = merged.insert(merged.end(), Occurrence{o.spec, o.flag, ""});
    }
    absl::StrAppend(&same->value, absl::string_view("\0", 1), o.value);
  }
  return merged;
}

std::string ValueName(const FlagSpec& spec, const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<bool>()) return "";
  if (!spec.placeholder.empty()) return absl::StrCat(" ", spec.placeholder);
  if (std::optional<NumberType> number = NumberTypeOf(flag)) return number->integer ? " N" : " X";
  if (flag.IsOfType<StringList>()) return " TEXT";
  if (flag.IsOfType<std::string>()) return " TEXT";
  return " VALUE";
}

// "(default: 128; an integer in [1, 2147483647])" or "(repeatable)"; may be empty.
std::string Notes(const FlagSpec& spec, const absl::CommandLineFlag& flag) {
  std::vector<std::string> notes;
  if (flag.IsOfType<StringList>()) {
    notes.push_back("repeatable");
  } else if (std::string value = flag.DefaultValue(); !value.empty() && value != "false") {
    notes.push_back(absl::StrCat("default: ", value));
  }
  const std::optional<NumberType> number = NumberTypeOf(flag);
  if (number.has_value() && (std::isfinite(spec.min) || std::isfinite(spec.max))) {
    notes.push_back(RangeText(spec, *number, /*brief=*/true));
  }
  return notes.empty() ? "" : absl::StrCat(" (", absl::StrJoin(notes, "; "), ")");
}

constexpr size_t kHelpWidth = 100;

// Words of `text` in lines of at most `width` columns, indented by `indent`
// from the second line on.
std::string Wrap(absl::string_view text, size_t first_column, size_t indent, size_t width) {
  std::string out;
  size_t column = first_column;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column > indent && column + 1 + word.size() > width) {
      absl::StrAppend(&out, "\n", std::string(indent, ' '));
      column = indent;
    } else if (column > indent || !out.empty()) {
      out += ' ';
      ++column;
    }
    absl::StrAppend(&out, word);
    column += word.size();
  }
  return out;
}

absl::StatusOr<std::string> FlagHelp(const CommandSpec& command, const FlagSpec& spec) {
  constexpr size_t kColumn = 26;
  absl::StatusOr<absl::CommandLineFlag*> flag = FindFlag(spec);
  if (!flag.ok()) return flag.status();
  std::string line =
      absl::StrCat("  ", DisplayFlagName(spec.name, command.spelling), ValueName(spec, **flag));
  line += line.size() + 1 < kColumn ? std::string(kColumn - line.size(), ' ')
                                    : absl::StrCat("\n", std::string(kColumn, ' '));
  const std::string text = absl::StrCat((*flag)->Help(), Notes(spec, **flag));
  return absl::StrCat(line, Wrap(text, kColumn, kColumn, kHelpWidth), "\n");
}

void PrintError(absl::string_view program, absl::string_view message) {
  std::string line(message);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  std::cerr << program << ": " << line << "\n";
}

}  // namespace

absl::StatusOr<Parsed> ParseFlags(const CommandSpec& command, absl::Span<const std::string> args) {
  std::vector<Occurrence> occurrences;
  absl::Status status;
  for (size_t i = 0; i < args.size() && status.ok(); ++i) {
    absl::StatusOr<Occurrence> occurrence = ReadOccurrence(command, args, &i);
    if (occurrence.ok()) {
      occurrences.push_back(*std::move(occurrence));
    } else {
      status = occurrence.status();
    }
  }
  // --help anywhere wins, even after a mistake: that is when it is wanted.
  if (std::any_of(args.begin(), args.end(), IsHelp)) return Parsed::kHelp;
  if (!status.ok()) return status;
  Given().clear();
  for (const Occurrence& o : MergeLists(std::move(occurrences))) {
    if (absl::Status s = Apply(command, o); !s.ok()) return s;
    Given().insert(o.flag);
  }
  return Parsed::kFlags;
}

bool WasGiven(const absl::CommandLineFlag& flag) { return Given().count(&flag) > 0; }

absl::StatusOr<std::string> HelpText(const CommandSpec& command) {
  std::string text = absl::StrCat("usage: ", command.usage, "\n\n",
                                  Wrap(command.summary, 0, 0, kHelpWidth), "\n");
  if (!command.flags.empty()) text += "\nflags:\n";
  for (const FlagSpec& spec : command.flags) {
    absl::StatusOr<std::string> help = FlagHelp(command, spec);
    if (!help.ok()) return help.status();
    text += *help;
  }
  const bool dashes = command.spelling == Spelling::kDashes;
  absl::StrAppend(&text, "\n--name=value and --name value are the same; so are ",
                  dashes ? "--a-b and --a_b" : "--a_b and --a-b", ".\n");
  return text;
}

int ParseFlagsForMain(const CommandSpec& command, absl::Span<const std::string> args) {
  absl::StatusOr<Parsed> parsed = ParseFlags(command, args);
  if (parsed.ok() && *parsed == Parsed::kFlags) return -1;
  absl::StatusOr<std::string> help =
      parsed.ok() ? HelpText(command) : absl::StatusOr<std::string>(parsed.status());
  if (!help.ok()) {
    PrintError(command.program, absl::StrCat(help.status().message(), " (see ", command.program,
                                             " --help)"));
    return 2;
  }
  std::cout << *help;
  return 0;
}

namespace {

std::string SubcommandList(absl::string_view program, absl::Span<const Subcommand> subcommands) {
  std::string text = absl::StrCat("usage: ", program, " COMMAND [flags]\n\ncommands:\n");
  for (const Subcommand& s : subcommands) {
    const size_t pad = s.name.size() < 13 ? 13 - s.name.size() : 1;
    absl::StrAppend(&text, "  ", s.name, std::string(pad, ' '), s.spec.summary, "\n");
  }
  absl::StrAppend(&text, "\n`", program, " COMMAND --help` lists the flags of COMMAND.\n");
  return text;
}

const Subcommand* FindSubcommand(absl::Span<const Subcommand> subcommands,
                                 absl::string_view name) {
  for (const Subcommand& s : subcommands) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace

int DispatchSubcommand(absl::string_view program, absl::Span<const Subcommand> subcommands,
                       absl::Span<const std::string> args) {
  const std::string hint = absl::StrCat(" (see ", program, " --help)");
  if (args.empty()) {
    PrintError(program, absl::StrCat("missing command", hint));
    return 2;
  }
  std::string name = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (name == "help" && !rest.empty()) {  // help SUBCOMMAND
    name = rest[0];
    rest = {"--help"};
  } else if (name == "help" || IsHelp(name)) {
    std::cout << SubcommandList(program, subcommands);
    return 0;
  }
  const Subcommand* subcommand = FindSubcommand(subcommands, name);
  if (subcommand == nullptr) {
    PrintError(program, absl::StrCat("unknown command '", name, "'", hint));
    return 2;
  }
  if (int code = ParseFlagsForMain(subcommand->spec, rest); code >= 0) return code;
  if (absl::Status status = subcommand->run(); !status.ok()) {
    PrintError(program, status.message());
    return 2;
  }
  return 0;
}

}  // namespace cli
}  // namespace llorch
