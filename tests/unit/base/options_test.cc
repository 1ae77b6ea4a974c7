#include "base/options.h"

#include "absl/strings/str_split.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ktls::base {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Parsed {
  std::string name = "default";
  int count = 3;
  uint32_t credits = 64;
  bool debug = false;
  std::string mode;
};

// A parser over `p`, then Parse(args); the status of Parse.
class OptionsTest : public ::testing::Test {
 protected:
  OptionsTest() : parser_("prog", "prog: does things.") {
    parser_.Group("Basics");
    parser_.Add("name", &p_.name, "who");
    parser_.Add("count", &p_.count, "how many").Range(1, 10);
    parser_.Group("More");
    parser_.Add("credits", &p_.credits, "initial credits");
    parser_.Add("debug", &p_.debug, "more output");
    parser_.AddCustom("mode", "fast|slow", "fast", "speed", [this](absl::string_view v) {
      if (v != "fast" && v != "slow") return absl::InvalidArgumentError("expected fast or slow");
      p_.mode = std::string(v);
      return absl::OkStatus();
    });
  }

  absl::Status Parse(std::vector<std::string> args) {
    std::vector<const char*> argv = {"prog"};
    for (const std::string& a : args) argv.push_back(a.c_str());
    return parser_.Parse(static_cast<int>(argv.size()), argv.data());
  }

  Parsed p_;
  OptionParser parser_;
};

TEST_F(OptionsTest, DefaultsStayWhenNothingIsGiven) {
  ASSERT_TRUE(Parse({}).ok());
  EXPECT_EQ(p_.name, "default");
  EXPECT_EQ(p_.count, 3);
  EXPECT_FALSE(p_.debug);
  EXPECT_FALSE(parser_.WasGiven("name"));
  EXPECT_TRUE(parser_.GivenOptions().empty());
}

TEST_F(OptionsTest, BothValueSpellingsAndBooleans) {
  ASSERT_TRUE(Parse({"--name=alice", "--count", "7", "--debug", "--mode=slow"}).ok());
  EXPECT_EQ(p_.name, "alice");
  EXPECT_EQ(p_.count, 7);
  EXPECT_TRUE(p_.debug);
  EXPECT_EQ(p_.mode, "slow");
  EXPECT_TRUE(parser_.WasGiven("count"));
  EXPECT_THAT(parser_.GivenOptions(), ElementsAre("count", "debug", "mode", "name"));
}

TEST_F(OptionsTest, BooleanValuesAndNegation) {
  ASSERT_TRUE(Parse({"--debug=true", "--debug=false"}).ok());
  EXPECT_FALSE(p_.debug);
  EXPECT_TRUE(parser_.WasGiven("debug"));  // given explicitly, even as false
  ASSERT_TRUE(Parse({"--debug=1", "--nodebug"}).ok());
  EXPECT_FALSE(p_.debug);
  EXPECT_FALSE(Parse({"--debug=maybe"}).ok());
  // A boolean never takes the next argument as its value.
  EXPECT_THAT(Parse({"--debug", "false"}).message(), HasSubstr("unexpected argument \"false\""));
}

TEST_F(OptionsTest, DashAndUnderscoreAreTheSame) {
  OptionParser p("prog", "");
  int64_t generation = 0;
  p.Add("expected_generation", &generation, "");
  const char* argv[] = {"prog", "--expected-generation=5"};
  ASSERT_TRUE(p.Parse(2, argv).ok());
  EXPECT_EQ(generation, 5);
  EXPECT_TRUE(p.WasGiven("expected-generation"));
}

TEST_F(OptionsTest, ValuesAreChecked) {
  EXPECT_THAT(Parse({"--count=11"}).message(), HasSubstr("--count=11: expected 1..10"));
  EXPECT_THAT(Parse({"--count=x"}).message(), HasSubstr("expected a number"));
  EXPECT_THAT(Parse({"--credits=-1"}).message(), HasSubstr("expected 0..4294967295"));
  EXPECT_THAT(Parse({"--mode=medium"}).message(),
              HasSubstr("--mode=medium: expected fast or slow"));
  EXPECT_THAT(Parse({"--name"}).message(), HasSubstr("--name needs a value"));
}

TEST(OptionTypesTest, IntegersAreCheckedAgainstTheirType) {
  OptionParser p("prog", "");
  int i = 0;
  uint32_t u = 0;
  int64_t l = 0;
  uint64_t ul = 0;
  p.Add("i", &i, "");
  p.Add("u", &u, "");
  p.Add("l", &l, "");
  p.Add("ul", &ul, "");
  auto parse = [&p](const char* arg) {
    const char* argv[] = {"prog", arg};
    return p.Parse(2, argv);
  };
  ASSERT_TRUE(parse("--i=-1").ok());
  EXPECT_EQ(i, -1);
  ASSERT_TRUE(parse("--u=4294967295").ok());
  EXPECT_EQ(u, 4294967295u);
  ASSERT_TRUE(parse("--l=-9000000000").ok());
  EXPECT_EQ(l, -9000000000);
  ASSERT_TRUE(parse("--ul=18446744073709551615").ok());
  EXPECT_EQ(ul, UINT64_MAX);
  EXPECT_THAT(parse("--i=2147483648").message(), HasSubstr("expected -2147483648..2147483647"));
  EXPECT_FALSE(parse("--u=4294967296").ok());
  EXPECT_FALSE(parse("--ul=-1").ok());
  EXPECT_EQ(i, -1);  // a refused value leaves the destination alone
}

TEST_F(OptionsTest, UnknownOptionIsNamedWithASuggestion) {
  absl::Status s = Parse({"--nmae=x"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unknown option --nmae (did you mean --name?)"));
  EXPECT_EQ(Parse({"--zzzzzzzzzzzz"}).message(), "unknown option --zzzzzzzzzzzz");
  EXPECT_THAT(Parse({"-x"}).message(), HasSubstr("unknown option -x"));
}

TEST_F(OptionsTest, PositionalOnlyWhenAllowed) {
  EXPECT_THAT(Parse({"extra"}).message(), HasSubstr("unexpected argument \"extra\""));
  parser_.AllowPositional();
  ASSERT_TRUE(Parse({"cert", "--name=n", "get", "--", "--not-an-option", "-"}).ok());
  EXPECT_THAT(parser_.positional(), ElementsAre("cert", "get", "--not-an-option", "-"));
}

TEST_F(OptionsTest, ShortAliases) {
  parser_.AddShortAlias('n', "name");
  parser_.AddShortAlias('d', "debug");
  ASSERT_TRUE(Parse({"-n", "bob", "-d"}).ok());
  EXPECT_EQ(p_.name, "bob");
  EXPECT_TRUE(p_.debug);
  ASSERT_TRUE(Parse({"-ncarol"}).ok());
  EXPECT_EQ(p_.name, "carol");
  EXPECT_FALSE(Parse({"-n"}).ok());
}

TEST_F(OptionsTest, SwitchesWithoutDestination) {
  parser_.AddSwitch("force", "");
  ASSERT_TRUE(Parse({"--force=false"}).ok());
  EXPECT_FALSE(parser_.WasGiven("force"));
  ASSERT_TRUE(Parse({"--force"}).ok());
  EXPECT_TRUE(parser_.WasGiven("force"));
}

TEST_F(OptionsTest, HelpAndVersion) {
  ASSERT_TRUE(Parse({"--help"}).ok());
  EXPECT_TRUE(parser_.help_requested());
  EXPECT_FALSE(parser_.version_requested());
  EXPECT_FALSE(Parse({"--version"}).ok());  // no version line: an unknown option
  parser_.SetVersion("prog 1.2.3");
  ASSERT_TRUE(Parse({"--version"}).ok());
  EXPECT_TRUE(parser_.version_requested());
  EXPECT_EQ(parser_.version_line(), "prog 1.2.3");
}

TEST_F(OptionsTest, HelpListsEveryOptionGroupedWithItsDefault) {
  const std::string help = parser_.Help();
  EXPECT_EQ(help.rfind("prog: does things.\n", 0), 0u) << help;
  EXPECT_THAT(help, HasSubstr("\nBasics:\n  --name=STRING  (default: \"default\")\n      who\n"));
  EXPECT_THAT(help, HasSubstr("  --count=N  (default: 3)\n      how many\n"));
  EXPECT_THAT(help, HasSubstr("\nMore:\n  --credits=N  (default: 64)\n"));
  EXPECT_THAT(help, HasSubstr("  --debug  (default: false)\n"));
  EXPECT_THAT(help, HasSubstr("  --mode=fast|slow  (default: fast)\n      speed\n"));
  EXPECT_LT(help.find("--name"), help.find("--credits"));
  // The help shows the declared defaults even after a parse changed the values.
  ASSERT_TRUE(Parse({"--count=9"}).ok());
  EXPECT_THAT(parser_.Help(), HasSubstr("--count=N  (default: 3)"));
}

TEST_F(OptionsTest, LongHelpTextIsWrapped) {
  OptionParser p("prog", "");
  std::string s;
  p.Add("long", &s, std::string(30, 'a') + " " + std::string(40, 'b') + " " + std::string(40, 'c'));
  const std::string help = p.Help();
  for (absl::string_view line : absl::StrSplit(help, '\n')) EXPECT_LE(line.size(), 100u) << line;
  EXPECT_EQ(help.rfind("Usage: prog [options]\n", 0), 0u) << help;  // no summary given
  EXPECT_THAT(help, HasSubstr("\n      " + std::string(40, 'c') + "\n"));
}

}  // namespace
}  // namespace ktls::base
