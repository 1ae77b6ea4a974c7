#include "base/json.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace ktls::base {
namespace {

std::string Quoted(absl::string_view s) {
  std::string out;
  AppendJsonString(&out, s);
  return out;
}

TEST(JsonStringTest, EscapesPerRfc8259) {
  EXPECT_EQ(Quoted("plain"), "\"plain\"");
  EXPECT_EQ(Quoted("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"");
  EXPECT_EQ(Quoted("\b\f\n\r\t"), "\"\\u0008\\u000c\\n\\r\\t\"");
  EXPECT_EQ(Quoted(std::string("\x00\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001f\\u007f\"");
  EXPECT_EQ(Quoted(" ~"), "\" ~\"");
}

TEST(JsonStringTest, OutputIsAlwaysValidUtf8) {
  EXPECT_EQ(Quoted("CN=J\xc3\xbcrgen"), "\"CN=J\xc3\xbcrgen\"");  // valid UTF-8 passes through
  EXPECT_EQ(Quoted("\xe2\x82\xac \xf0\x9f\x94\x92"), "\"\xe2\x82\xac \xf0\x9f\x94\x92\"");
  EXPECT_EQ(Quoted("\xff\xc3"), R"("\u00ff\u00c3")");  // not UTF-8: escaped byte by byte
  EXPECT_EQ(Quoted("\xe2\x82"), R"("\u00e2\u0082")");  // truncated sequence
}

TEST(JsonWriterTest, NestedObjectsAndArraysGetTheirCommas) {
  JsonWriter w;
  w.BeginObject()
      .Field("s", "x")
      .Field("n", uint64_t{7})
      .Field("b", false)
      .Key("neg")
      .Int(-3)
      .Key("list")
      .BeginArray()
      .String("a")
      .String("b")
      .BeginObject()
      .EndObject()
      .EndArray()
      .Key("empty")
      .BeginArray()
      .EndArray()
      .Key("obj")
      .BeginObject()
      .Field("k", true)
      .EndObject()
      .Key("nothing")
      .Null()
      .EndObject();
  EXPECT_EQ(w.str(),
            "{\"s\":\"x\",\"n\":7,\"b\":false,\"neg\":-3,\"list\":[\"a\",\"b\",{}],\"empty\":[],"
            "\"obj\":{\"k\":true},\"nothing\":null}");
}

TEST(JsonWriterTest, NumbersAndNonFiniteValues) {
  JsonWriter w;
  w.BeginArray()
      .Double(5)
      .Double(0.1234567)
      .Fixed(2.25, 1)
      .Double(std::nan(""))
      .Fixed(std::numeric_limits<double>::infinity(), 1)
      .Uint(UINT64_MAX)
      .EndArray();
  EXPECT_EQ(w.Take(), "[5,0.123457,2.2,null,null,18446744073709551615]");
}

}  // namespace
}  // namespace ktls::base
