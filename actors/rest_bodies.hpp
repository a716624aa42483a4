#pragma once

// The JSON bodies of REST requests, read into typed requests (docs/rest-api.md). The
// body is hostile: any bytes, any JSON shape. Each parser answers "" when the body is
// good and fills its outputs, or the message of a 400 `bad_request` naming the field
// that is wrong (and, for an unknown word, the legal ones). No CAF, no actors: the
// fuzz harness fuzz/fuzz_rest.cpp drives them directly.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/records.hpp"

namespace parry::rest {

/// Longest comment kept, in bytes (cut on a character boundary).
inline constexpr std::size_t max_comment = 4096;
/// Longest token name kept, in bytes.
inline constexpr std::size_t max_token_name = 128;

/// POST /actions: the request, the password re-entry ("" if none) and, once the body
/// has the right shape, what was asked for ("<type> on <incident>", for the audit).
std::string parse_action(std::string_view body, action_request& req,
                         std::string& password, std::string& what);

/// Targets one POST /actions/bulk may name at most.
inline constexpr std::size_t max_bulk_targets = 1000;

/// POST /actions/bulk's `canary`: register the first `count` targets alone, and the
/// rest only once each of those completed within `wait_ms`.
struct bulk_canary {
  std::size_t count = 0; ///< 0: no canary.
  int64_t wait_ms = 10000;
};
/// Canary targets at most, and the longest wait for them (the REST call itself has
/// 25 s).
inline constexpr std::size_t max_canary_targets = 100;
inline constexpr int64_t max_canary_wait_ms = 15000;

/// POST /actions/bulk: one request per target, each with the body's type, params and
/// comment; the password re-entry ("" if none); what was asked for ("<type> on <n>
/// targets", for the audit); the canary, if one is asked for. A target that is not
/// well formed refuses the whole body, naming its index.
std::string parse_bulk(std::string_view body, std::vector<action_request>& reqs,
                       std::string& password, std::string& what, bulk_canary& canary);

/// POST /login. A user name over 128 bytes or a password over 1024 bytes is
/// `too_long` (answered as a wrong password, never hashed).
std::string parse_login(std::string_view body, std::string& user, std::string& password,
                        bool& too_long);

/// POST /tokens: `name` (cut to max_token_name) and `expires_in` seconds (0: the
/// default).
std::string parse_token(std::string_view body, std::string& name, int64_t& expires_in);

/// POST /enrollment-tokens: `ttl_seconds` (positive integer, required) and `uses`
/// (positive integer, default 1). The upper bounds are the server's to check.
std::string parse_enrollment_token(std::string_view body, int64_t& ttl_seconds,
                                   uint32_t& uses);

/// POST /integrators: `name` (an id: [A-Za-z0-9._:-], 1..128), `role` (a user_role
/// word) and `public_key` (the integrator's CURVE public key, 40 Z85 characters;
/// checked by the caller).
std::string parse_integrator(std::string_view body, std::string& name, user_role& role,
                             std::string& public_key);

/// POST /users: a new user (name, role; created_at left 0) and its password.
std::string parse_new_user(std::string_view body, user_record& user,
                           std::string& password);

/// PATCH /users/{name}: what changes (a role, a password, disabled; each may be
/// absent).
std::string parse_user_change(std::string_view body, std::optional<user_role>& role,
                              std::string& password, std::optional<bool>& disabled);

/// POST /actions/{id}/reverse: the optional comment and password re-entry.
std::string parse_reverse(std::string_view body, std::string& comment,
                          std::string& password);

/// The optional `comment` of a cancel or reverse body, cut to max_comment bytes on a
/// character boundary; "" when there is none or the body is not a JSON object.
std::string comment_of(std::string_view body);

/// The rules of user names and passwords, shared with the bootstrap.
bool valid_username(const std::string& name);
std::string password_problem(const std::string& password);

} // namespace parry::rest
