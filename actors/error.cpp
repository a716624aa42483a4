#include "actors/error.hpp"

#include <caf/atom.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace parry {

const char* to_string(ec x) {
  switch (x) {
  case ec::none:
    return "none";
  case ec::unspecified:
    return "unspecified";
  case ec::not_found:
    return "not_found";
  case ec::bad_request:
    return "bad_request";
  case ec::unauthenticated:
    return "unauthenticated";
  case ec::forbidden:
    return "forbidden";
  case ec::not_applicable:
    return "not_applicable";
  case ec::conflict:
    return "conflict";
  case ec::locked:
    return "locked";
  case ec::storage:
    return "storage";
  }
  return "unspecified";
}

caf::atom_value ec_category() {
  return caf::detail::error_factory<ec>::category;
}

caf::error make_error(ec x, std::string message) {
  return caf::error{x, std::move(message)};
}

caf::error make_error(ec x) {
  return caf::error{x};
}

ec code_of(const caf::error& err) {
  if (!err) return ec::none;
  if (err.category() != ec_category()) return ec::unspecified;
  return static_cast<ec>(err.code());
}

std::string message_of(const caf::error& err) {
  if (!err) return "no error";
  if (err.category() == ec_category()) {
    const auto& ctx = err.context();
    if (ctx.size() == 1 && ctx.match_element<std::string>(0))
      return ctx.get_as<std::string>(0);
    return to_string(static_cast<ec>(err.code()));
  }
  if (err.category() == caf::atom("system"))
    return caf::to_string(static_cast<caf::sec>(err.code()));
  return "internal error";
}

} // namespace parry
