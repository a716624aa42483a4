#define BOOST_TEST_MODULE common
#include <boost/test/unit_test.hpp>

#include "common/utf8.hpp"

using namespace parry;

BOOST_AUTO_TEST_SUITE(utf8)

BOOST_AUTO_TEST_CASE(accepts_well_formed_text) {
  BOOST_TEST(valid_utf8(""));
  BOOST_TEST(valid_utf8("plain ascii"));
  BOOST_TEST(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x92")); // é € 🔒
  BOOST_TEST(valid_utf8("\xF4\x8F\xBF\xBF"));                          // U+10FFFF
}

BOOST_AUTO_TEST_CASE(refuses_ill_formed_text) {
  BOOST_TEST(!valid_utf8("bad\xFFhost"));
  BOOST_TEST(!valid_utf8("\xC0\xAF"));         // overlong '/'
  BOOST_TEST(!valid_utf8("\xE0\x80\xAF"));     // overlong, three bytes
  BOOST_TEST(!valid_utf8("\xED\xA0\x80"));     // surrogate
  BOOST_TEST(!valid_utf8("\xF4\x90\x80\x80")); // above U+10FFFF
  BOOST_TEST(!valid_utf8("\xC3"));             // cut short
  BOOST_TEST(!valid_utf8("\x80"));             // lone continuation byte
}

BOOST_AUTO_TEST_CASE(prefix_never_splits_a_character) {
  std::string s(4095, 'a');
  s += "\xC3\xA9"; // 4097 bytes, the last character straddles 4096
  auto p = utf8_prefix(s, 4096);
  BOOST_TEST(p.size() == 4095u);
  BOOST_TEST(valid_utf8(p));
  BOOST_TEST(utf8_prefix(s, 5000).size() == s.size());
  BOOST_TEST(utf8_prefix("\xE2\x82\xAC", 2).empty());
}

BOOST_AUTO_TEST_CASE(sanitized_replaces_each_bad_byte) {
  BOOST_TEST(utf8_sanitized("bad\xFFhost") == "bad\xEF\xBF\xBDhost");
  BOOST_TEST(utf8_sanitized("ok \xC3\xA9") == "ok \xC3\xA9");
  BOOST_TEST(valid_utf8(utf8_sanitized("\xC3\x28\xA0\xA1")));
}

BOOST_AUTO_TEST_SUITE_END()
