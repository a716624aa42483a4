// libFuzzer harness: the JSON bodies of REST requests (actors/rest_bodies.cpp), as
// the api actor reads them. The first byte of the input picks the parser, the rest is
// the body. Beyond "no crash, no sanitizer report", each parser's promises are
// checked: what it accepts is within the documented bounds, and every message it
// answers can be written as JSON.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "actors/rest_bodies.hpp"
#include "bus/codec.hpp"
#include "common/utf8.hpp"

namespace {

using namespace parry;

void check(bool ok) {
  if (!ok) std::abort();
}

/// An error message becomes a JSON body: that must never throw.
void writable(const std::string& message) {
  nlohmann::json j{{"error", {{"code", "bad_request"}, {"message", message}}}};
  (void)j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view body{reinterpret_cast<const char*>(data) + 1, size - 1};
  switch (data[0] % 7) {
  case 0: {
    action_request req;
    std::string password, what;
    auto why = rest::parse_action(body, req, password, what);
    writable(why);
    writable(what);
    if (why.empty()) {
      check(bus::valid_id(req.incident_id));
      check(req.params.size() <= 32);
      check(req.argv.size() <= max_arguments);
      check(req.comment.size() <= 4096 && password.size() <= 4096);
    }
    break;
  }
  case 1: {
    std::string user, password;
    bool too_long = false;
    auto why = rest::parse_login(body, user, password, too_long);
    writable(why);
    if (why.empty()) check(too_long == (user.size() > 128 || password.size() > 1024));
    break;
  }
  case 2: {
    std::string name;
    int64_t expires_in = -1;
    auto why = rest::parse_token(body, name, expires_in);
    writable(why);
    if (why.empty()) {
      check(expires_in >= 0);
      check(name.size() <= rest::max_token_name);
    }
    break;
  }
  case 3: {
    user_record u;
    std::string password;
    auto why = rest::parse_new_user(body, u, password);
    writable(why);
    if (why.empty()) {
      check(rest::valid_username(u.username));
      check(password.size() >= 12 && password.size() <= 1024);
    }
    break;
  }
  case 4: {
    std::optional<user_role> role;
    std::string password;
    std::optional<bool> disabled;
    auto why = rest::parse_user_change(body, role, password, disabled);
    writable(why);
    if (why.empty() && !password.empty())
      check(password.size() >= 12 && password.size() <= 1024);
    break;
  }
  case 5: {
    std::string comment, password;
    auto why = rest::parse_reverse(body, comment, password);
    writable(why);
    if (why.empty()) check(comment.size() <= rest::max_comment);
    break;
  }
  default: {
    auto comment = rest::comment_of(body);
    check(comment.size() <= rest::max_comment);
    check(utf8_prefix(comment, rest::max_comment).size() == comment.size());
    break;
  }
  }
  return 0;
}
