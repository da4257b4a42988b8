#include "common/cli/flags.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"

ABSL_FLAG(int32_t, test_count, 3, "how many");
ABSL_FLAG(double, test_ratio, 0.5, "a ratio");
ABSL_FLAG(bool, test_verbose, false, "talk more");
ABSL_FLAG(std::string, test_name, "", "a name");
ABSL_FLAG(llorch::cli::StringList, test_stop, {}, "stop strings");
ABSL_FLAG(std::optional<uint64_t>, test_seed, std::nullopt, "seed (default: random)");
ABSL_FLAG(int32_t, other_count, 7, "another command's count");

namespace llorch {
namespace cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

CommandSpec TestCommand(Spelling spelling = Spelling::kDashes) {
  CommandSpec command;
  command.program = "prog sub";
  command.summary = "Does a test.";
  command.usage = "prog sub [--test-count N]";
  command.flags = {FlagSpec("test_count").AtLeast(1),
                   FlagSpec("test-ratio").AtLeast(0).AtMost(1),
                   "test_verbose",
                   "test_name",
                   "test_stop",
                   "test_seed"};
  command.spelling = spelling;
  return command;
}

absl::Status Parse(const std::vector<std::string>& args,
                   const CommandSpec& command = TestCommand()) {
  absl::StatusOr<Parsed> parsed = ParseFlags(command, args);
  if (!parsed.ok()) return parsed.status();
  EXPECT_EQ(*parsed, Parsed::kFlags);
  return absl::OkStatus();
}

class FlagsTest : public ::testing::Test {
 private:
  absl::FlagSaver saver_;  // every test starts from the defaults
};

TEST_F(FlagsTest, NamesHaveTwoSpellings) {
  EXPECT_EQ(NormalizeFlagName("--max-tokens"), "max_tokens");
  EXPECT_EQ(NormalizeFlagName("max_tokens"), "max_tokens");
  EXPECT_EQ(NormalizeFlagName("-h"), "h");
  EXPECT_EQ(DisplayFlagName("max_tokens", Spelling::kDashes), "--max-tokens");
  EXPECT_EQ(DisplayFlagName("max-tokens", Spelling::kUnderscores), "--max_tokens");
}

TEST_F(FlagsTest, EqualsAndSeparateValuesInBothSpellings) {
  ASSERT_TRUE(Parse({"--test-count=5"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 5);
  ASSERT_TRUE(Parse({"--test_count", "6"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 6);
  ASSERT_TRUE(Parse({"--test-name", "-x", "--test_ratio=0.25"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_name), "-x");
  EXPECT_EQ(absl::GetFlag(FLAGS_test_ratio), 0.25);
}

TEST_F(FlagsTest, BooleansWithAndWithoutValue) {
  ASSERT_TRUE(Parse({"--test-verbose"}).ok());
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_verbose));
  ASSERT_TRUE(Parse({"--test_verbose=false"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_test_verbose));
  ASSERT_TRUE(Parse({"--test-verbose=true"}).ok());
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_verbose));
  // A boolean never takes the next argument.
  EXPECT_THAT(Parse({"--test-verbose", "false"}).message(),
              HasSubstr("unexpected argument 'false'"));
  EXPECT_THAT(Parse({"--test-verbose=maybe"}).message(),
              HasSubstr("--test-verbose: invalid value 'maybe'"));
}

TEST_F(FlagsTest, FlagOfAnotherCommandIsUnknown) {
  const absl::Status status = Parse({"--test-count", "2", "--other-count", "1"});
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_EQ(status.message(), "unknown flag --other-count");
  EXPECT_EQ(Parse({"--other_count=1"}).message(), "unknown flag --other_count");
  EXPECT_EQ(Parse({"-test_count=1"}).message(), "unknown flag -test_count=1");
  EXPECT_EQ(Parse({"stray"}).message(), "unexpected argument 'stray'");
  EXPECT_EQ(absl::GetFlag(FLAGS_other_count), 7);
}

TEST_F(FlagsTest, NumbersAreRangeChecked) {
  const std::string count = "--test-count must be an integer in [1, 2147483647], got '";
  EXPECT_EQ(Parse({"--test-count=4294967297"}).message(), count + "4294967297'");
  EXPECT_EQ(Parse({"--test-count", "0"}).message(), count + "0'");
  EXPECT_EQ(Parse({"--test-count", "-3"}).message(), count + "-3'");
  EXPECT_EQ(Parse({"--test-count", "two"}).message(), count + "two'");
  EXPECT_EQ(Parse({"--test-count", "1.5"}).message(), count + "1.5'");
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 3);
  EXPECT_EQ(Parse({"--test-ratio", "2"}).message(),
            "--test-ratio must be a number in [0, 1], got '2'");
  EXPECT_FALSE(Parse({"--test-ratio", "nan"}).ok());
  EXPECT_EQ(Parse({"--test-seed", "-1"}).message(),
            "--test-seed must be an integer in [0, 18446744073709551615], got '-1'");
  ASSERT_TRUE(Parse({"--test-seed", "18446744073709551615"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_seed), UINT64_MAX);
}

TEST_F(FlagsTest, RangeTextForExclusiveAndOpenBounds) {
  CommandSpec command = TestCommand();
  command.flags = {FlagSpec("test_ratio").Above(0).AtMost(1)};
  EXPECT_THAT(Parse({"--test-ratio=0"}, command).message(), HasSubstr("a number in (0, 1]"));
  command.flags = {FlagSpec("test_ratio").Above(0)};
  EXPECT_THAT(Parse({"--test-ratio=-1"}, command).message(), HasSubstr("a number > 0"));
  EXPECT_THAT(Parse({"--test-ratio=inf"}, command).message(), HasSubstr("a number > 0"));
  ASSERT_TRUE(Parse({"--test-ratio=1e9"}, command).ok());
}

TEST_F(FlagsTest, RepeatedStringsKeepEveryValueWhole) {
  ASSERT_TRUE(Parse({"--test-stop", "a,b", "--test_stop=x\ny", "--test-stop", ""}).ok());
  EXPECT_THAT(absl::GetFlag(FLAGS_test_stop).values,
              ::testing::ElementsAre("a,b", "x\ny", ""));
  ASSERT_TRUE(Parse({}).ok());
  StringList list;
  std::string error;
  ASSERT_TRUE(AbslParseFlag(AbslUnparseFlag({{"p", "", "q,r"}}), &list, &error));
  EXPECT_THAT(list.values, ::testing::ElementsAre("p", "", "q,r"));
  ASSERT_TRUE(AbslParseFlag("one,value", &list, &error));
  EXPECT_THAT(list.values, ::testing::ElementsAre("one,value"));
}

TEST_F(FlagsTest, KnowsWhatWasGiven) {
  ASSERT_TRUE(Parse({"--test-name", "", "--test-count=3"}).ok());
  EXPECT_TRUE(WasGiven(FLAGS_test_name));
  EXPECT_TRUE(WasGiven(FLAGS_test_count));
  EXPECT_FALSE(WasGiven(FLAGS_test_ratio));
  ASSERT_TRUE(Parse({"--test-ratio=1"}).ok());
  EXPECT_FALSE(WasGiven(FLAGS_test_name));
  EXPECT_TRUE(WasGiven(FLAGS_test_ratio));
}

TEST_F(FlagsTest, MissingValueIsNamed) {
  EXPECT_EQ(Parse({"--test_name"}).message(), "--test-name needs a value");
  EXPECT_EQ(Parse({"--test-name"}, TestCommand(Spelling::kUnderscores)).message(),
            "--test_name needs a value");
}

TEST_F(FlagsTest, HelpWinsEvenAfterAMistake) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"}, {"-h"}, {"--bogus", "--help"},
                                             {"--test-count", "0", "-h"}}) {
    absl::StatusOr<Parsed> parsed = ParseFlags(TestCommand(), args);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, Parsed::kHelp);
  }
  // "--help" alone always asks for help; --name=--help passes it as a value.
  absl::StatusOr<Parsed> parsed = ParseFlags(TestCommand(), {"--test-name", "--help"});
  EXPECT_TRUE(parsed.ok() && *parsed == Parsed::kHelp);
  parsed = ParseFlags(TestCommand(), {"--test-name=--help"});
  ASSERT_TRUE(parsed.ok() && *parsed == Parsed::kFlags);
  EXPECT_EQ(absl::GetFlag(FLAGS_test_name), "--help");
}

TEST_F(FlagsTest, HelpListsOnlyTheCommandsFlags) {
  absl::StatusOr<std::string> help = HelpText(TestCommand());
  ASSERT_TRUE(help.ok()) << help.status();
  EXPECT_THAT(*help, HasSubstr("usage: prog sub [--test-count N]\n\nDoes a test.\n"));
  EXPECT_THAT(*help, HasSubstr("--test-count N"));
  EXPECT_THAT(*help, HasSubstr("how many (default: 3; an integer >= 1)"));
  EXPECT_THAT(*help, HasSubstr("a ratio (default: 0.5; a number in [0, 1])"));
  EXPECT_THAT(*help, HasSubstr("--test-verbose "));
  EXPECT_THAT(*help, HasSubstr("stop strings (repeatable)"));
  EXPECT_THAT(*help, Not(HasSubstr("other")));
  EXPECT_THAT(*help, Not(HasSubstr("test_count")));
  help = HelpText(TestCommand(Spelling::kUnderscores));
  ASSERT_TRUE(help.ok());
  EXPECT_THAT(*help, HasSubstr("--test_count N"));
  CommandSpec command = TestCommand();
  command.flags = {FlagSpec("test_name").Value("PATH")};
  help = HelpText(command);
  ASSERT_TRUE(help.ok());
  EXPECT_THAT(*help, HasSubstr("  --test-name PATH        a name\n"));
}

TEST_F(FlagsTest, ReadsAnotherAbslFlag) {
  CommandSpec command = TestCommand();
  command.flags = {FlagSpec("count").Reads("other_count").AtLeast(0)};
  ASSERT_TRUE(Parse({"--count", "11"}, command).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_other_count), 11);
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 3);
  absl::StatusOr<std::string> help = HelpText(command);
  ASSERT_TRUE(help.ok());
  EXPECT_THAT(*help, HasSubstr("--count N"));
  EXPECT_THAT(*help, HasSubstr("another command's count (default: 7;"));
}

TEST_F(FlagsTest, FlagsOfAFileListedFirst) {
  const std::vector<FlagSpec> flags = FlagsOf(
      "common/cli/flags_test.cc", {FlagSpec("test_ratio").AtMost(1), "gone", "test_count"});
  std::vector<std::string> names;
  for (const FlagSpec& f : flags) names.push_back(f.name);
  EXPECT_THAT(names, ::testing::ElementsAre("test_ratio", "test_count", "other_count", "test_name",
                                            "test_seed", "test_stop", "test_verbose"));
  EXPECT_EQ(flags[0].max, 1);
  EXPECT_TRUE(FlagsOf("no/such/file.cc", {"test_count"}).empty());
}

TEST_F(FlagsTest, SpecWithoutAbslFlagIsInternal) {
  CommandSpec command = TestCommand();
  command.flags = {"no_such_flag"};
  EXPECT_TRUE(absl::IsInternal(Parse({"--no-such-flag=1"}, command)));
  EXPECT_TRUE(absl::IsInternal(HelpText(command).status()));
}

TEST_F(FlagsTest, DispatchRunsTheSubcommandWithItsFlags) {
  int runs = 0;
  std::vector<Subcommand> subcommands = {
      {"sub", TestCommand(), [&] {
         ++runs;
         return absl::GetFlag(FLAGS_test_count) == 9 ? absl::OkStatus()
                                                      : absl::InvalidArgumentError("not 9");
       }}};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"sub", "--test-count", "9"}), 0);
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"sub", "--test-count", "8"}), 2);
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"sub", "--other-count", "8"}), 2);
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"nope"}), 2);
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {}), 2);
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "prog: not 9\n"
            "prog sub: unknown flag --other-count (see prog sub --help)\n"
            "prog: unknown command 'nope' (see prog --help)\n"
            "prog: missing command (see prog --help)\n");
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"--help"}), 0);
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"help", "sub"}), 0);
  EXPECT_EQ(DispatchSubcommand("prog", subcommands, {"sub", "-h"}), 0);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(out, HasSubstr("  sub          Does a test.\n"));
  EXPECT_THAT(out, HasSubstr("usage: prog sub [--test-count N]"));
  EXPECT_EQ(runs, 2);
}

}  // namespace
}  // namespace cli
}  // namespace llorch
