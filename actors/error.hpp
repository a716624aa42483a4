#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace parry {

/// Every error parryd reports, one code per kind of failure.
enum class ec : uint8_t {
  /// Not an error.
  none = 0,
  /// Something failed that has no better code; the message says what.
  unspecified,
  /// The named object does not exist.
  not_found,
  /// The request is malformed or a field is invalid.
  bad_request,
  /// No valid session or token, or a wrong password.
  unauthenticated,
  /// The caller's role does not allow the call, or the CSRF token is missing.
  forbidden,
  /// The action does not apply to the requested target.
  not_applicable,
  /// The request conflicts with existing state (duplicate user, ...).
  conflict,
  /// Too many failed logins: the account is locked for a while.
  locked,
  /// The store failed to read or write.
  storage,
};

/// Stable lower-case name used in REST errors and logs.
const char* to_string(ec x);

} // namespace parry

// `caf::error{ec::x}` and `caf::make_error(ec::x, ...)` work, in category "parry".
CAF_ERROR_CODE_ENUM(parry::ec, "parry")

namespace parry {

/// Category under which parry errors travel inside CAF.
caf::atom_value ec_category();

/// Makes a CAF error carrying `x` and a human-readable message.
caf::error make_error(ec x, std::string message);

/// Makes a CAF error carrying `x` only.
caf::error make_error(ec x);

/// The `ec` inside `err`, or `ec::unspecified` for errors from elsewhere.
ec code_of(const caf::error& err); // ec::none for no error

/// The message inside `err`, or CAF's rendering for errors from elsewhere.
std::string message_of(const caf::error& err); // "no error" for none

} // namespace parry
