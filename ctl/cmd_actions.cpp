// parryctl actions, action, follow, cancel, reverse and the action commands
// (isolate, release, prevent-run, quarantine, delete-file, terminate, start-process):
// listing, showing and following actions, and registering them after confirmation.

#include "ctl/cli.hpp"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/domain.hpp"

namespace parry::ctl {

namespace {

using steady = std::chrono::steady_clock;

int cmd_actions(session& s, const std::string& device, const std::string& incident,
                const std::string& state, int limit) {
  auto q = parry::ctl::query_string({{"device_id", device},
                                     {"incident_id", incident},
                                     {"state", state},
                                     {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/actions" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : sub(r.body, "actions"))
    rows.push_back({cell(a, "action_id"), cell(a, "type"), cell(a, "device_id"),
                    cell(a, "incident_id"), parry::ctl::action_target_text(a),
                    cell(a, "state"), cell(a, "requested_by"), cell(a, "updated_at")});
  if (rows.empty())
    std::cout << "no actions\n";
  else
    std::cout << parry::ctl::format_table(
        {"ACTION", "TYPE", "DEVICE", "INCIDENT", "TARGET", "STATE", "BY", "UPDATED"},
        rows);
  return 0;
}

std::vector<std::string> transition_row(const json& t) {
  using parry::ctl::cell;
  return {cell(t, "time"), cell(t, "state"), cell(t, "reason")};
}

int cmd_action(session& s, const std::string& id) {
  auto r = s.call("GET", id_path("actions", id));
  if (s.opts().json) return print_json(r), 0;
  const auto& a = sub(r.body, "action");
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : sub(a, "transitions"))
    rows.push_back(transition_row(t));
  std::cout << parry::ctl::format_fields(parry::ctl::action_fields(a)) << '\n'
            << parry::ctl::format_table({"TIME", "STATE", "REASON"}, rows);
  return 0;
}

// Why a final action did not complete: the result's error, else the reason of its
// last transition.
std::string final_reason(const json& action) {
  std::string why = str(sub(action, "result"), "error");
  const auto& ts = sub(action, "transitions");
  if (why.empty() && ts.is_array() && !ts.empty()) why = str(ts.back(), "reason");
  return why;
}

/// Polls the action until it reaches a final state or the time is up; prints
/// transitions as they appear (or, under --json, the last answer once). Exit 0 only
/// if the first final state is `completed`.
int follow(session& s, const std::string& id, double timeout_s) {
  auto budget =
      std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(timeout_s));
  auto deadline = steady::now() + budget;
  std::size_t shown = 0;
  std::size_t state_width = 12;
  while (true) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    auto per_call = std::clamp(left, milliseconds{1000}, parry::client::default_timeout);
    parry::response r;
    try {
      r = s.call("GET", id_path("actions", id), nullptr, {}, per_call);
    } catch (const parry::client_error&) {
      if (steady::now() < deadline) throw;
      r.status = 0; // the time ran out during the call: a timeout, not a failure
    }
    const auto& a = sub(r.body, "action");
    if (!s.opts().json) {
      const auto& ts = sub(a, "transitions");
      for (; ts.is_array() && shown < ts.size(); ++shown) {
        auto row = transition_row(ts[shown]);
        std::string state = parry::ctl::printable(row[1]);
        std::string line = parry::ctl::printable(row[0]) + "  " + state;
        line.append(state_width > state.size() ? state_width - state.size() : 0, ' ');
        line += "  " + parry::ctl::printable(row[2]);
        std::cout << line << '\n' << std::flush;
      }
    }
    auto done = parry::ctl::outcome_for_action(a);
    if (done) {
      if (s.opts().json)
        print_json(r);
      else if (*done == outcome::ok)
        std::cout << "action " << parry::ctl::printable(id) << " completed\n";
      if (*done != outcome::ok) {
        std::string state = str(a, "state");
        std::string why = final_reason(a);
        std::cerr << parry::ctl::printable("error: action_" + state + ": action " + id +
                                           " " + state + (why.empty() ? "" : ": " + why))
                  << '\n';
      }
      return parry::ctl::exit_code(*done);
    }
    if (steady::now() >= deadline) {
      if (s.opts().json && r.status != 0) print_json(r);
      std::string state = str(a, "state");
      std::ostringstream msg;
      msg << "error: timeout: action " << id << " not final after " << timeout_s << " s"
          << (state.empty() ? "" : " (still " + state + ")");
      throw fatal(outcome::timeout, parry::ctl::printable(msg.str()));
    }
    std::this_thread::sleep_for(std::min<milliseconds>(
        poll_interval,
        std::chrono::duration_cast<milliseconds>(deadline - steady::now())));
  }
}

/// The options of one action command.
struct action_request {
  std::string type; ///< API action type
  std::string incident;
  std::string event;
  std::string comment;
  std::string idempotency_key;
  bool wait = false;
  double timeout = 60;
  bool yes = false;
  bool password_stdin = false;
  std::string path; ///< start-process only, like the two below
  std::string cwd;
  std::string args;
  bool all_incidents = false; ///< every incident matching `filters` (POST /actions/bulk)
  std::vector<std::string> filters; ///< KEY=VALUE, GET /incidents query parameters
  std::size_t canary = 0;           ///< act on this many first; go on if they complete
};

/// Prints a newly registered action (or, without --wait under --json, the answer) and
/// follows it with --wait.
int registered(session& s, const parry::response& r, bool wait, double timeout,
               const std::string& note = {}) {
  const auto& action = sub(r.body, "action");
  std::string id = str(action, "action_id");
  if (!s.opts().json) {
    using parry::ctl::cell;
    std::string line = "action " + cell(action, "action_id") + " " +
                       cell(action, "type") + " on " + cell(action, "device_id") + ": " +
                       cell(action, "state");
    if (!str(action, "reverses").empty())
      line += " (reverses " + str(action, "reverses") + ")";
    // Idempotency-Key: 200 means the first registration came back, not a new one.
    if (r.status == 200 && !note.empty()) line += " (" + note + ")";
    std::cout << parry::ctl::printable(line) << '\n' << std::flush;
  }
  if (!wait) {
    if (s.opts().json) print_json(r);
    return 0;
  }
  if (id.empty())
    throw fatal(outcome::server_error, "error: bad_response: no action_id in the answer");
  return follow(s, id, timeout);
}

// The device's details make the confirmation clearer (host name) but are not needed
// to go on, so a refusal here is ignored.
json device_or_null(session& s, const std::string& device_id) {
  if (device_id.empty()) return nullptr;
  auto r = s.client().request("GET", id_path("devices", device_id));
  return r.ok() ? sub(r.body, "device") : json();
}

/// Shows what the action will do, has it confirmed, asks for the password when the
/// server wants one, and registers it.
int cmd_respond(session& s, const action_request& a) {
  require_confirmable(a.yes);
  auto available = s.call("GET", available_path(a.incident));
  if (auto why = parry::ctl::applicability_problem(a.type, a.event, available.body);
      !why.empty())
    throw fatal(outcome::server_error,
                parry::ctl::printable("error: not_applicable: " + why) +
                    "\nhint: 'parryctl available --incident " +
                    parry::ctl::printable(a.incident) + "' shows what applies");
  auto incident = s.call("GET", id_path("incidents", a.incident));
  const json& inc = sub(incident.body, "incident");

  json params = json::object();
  if (a.type == "start_process") {
    params["path"] = a.path;
    if (!a.cwd.empty()) params["working_directory"] = a.cwd;
  }
  json device = device_or_null(s, str(inc, "device_id"));
  if (a.type == "start_process") {
    // Split here by the device's rules and send the list: what is confirmed is what
    // runs (POSIX words, or CommandLineToArgvW on Windows; common/domain.hpp).
    auto os = str(available.body, "device_os_family") == "windows"
                  ? parry::os_family::windows
                  : parry::os_family_of(device.is_object() ? str(device, "os") : "");
    std::string why;
    auto argv = parry::split_arguments(a.args, os, why);
    if (!argv)
      throw fatal(outcome::usage, parry::ctl::printable("error: --args: " + why));
    params["arguments"] = *argv;
  }
  confirm(parry::ctl::describe_pending_action(a.type, inc, a.event, params, device),
          a.yes);

  json target = a.event.empty() ? json{{"kind", "detection"}}
                                : json{{"kind", "event"}, {"event_id", a.event}};
  json body{{"type", a.type},
            {"incident_id", a.incident},
            {"target", target},
            {"params", params},
            {"comment", a.comment}};
  password_scrub scrub{body};
  // Only sent when needed: a password the server does not expect is no help, and a
  // mistyped one would still count toward the lockout.
  if (parry::ctl::needs_password(a.type, available.body))
    body["password"] =
        own_password(a.password_stdin, "Your password (confirms " + a.type + "): ");
  parry::header_list headers;
  if (!a.idempotency_key.empty())
    headers.emplace_back("Idempotency-Key", a.idempotency_key);
  auto r = s.call("POST", "/api/v1/actions", &body, headers);
  return registered(s, r, a.wait, a.timeout,
                    "registered earlier with this idempotency key");
}

/// Incidents that GET /incidents lists with `filters` (KEY=VALUE), every page.
std::vector<std::string> matching_incidents(session& s,
                                            const std::vector<std::string>& filters) {
  constexpr std::size_t most = 100000;
  std::vector<std::pair<std::string, std::string>> params;
  for (const auto& f : filters) {
    auto eq = f.find('=');
    // An empty value means "no filter" to the server: every incident. An unset shell
    // variable must not reach the whole fleet.
    if (eq == std::string::npos || eq == 0 || eq + 1 == f.size())
      throw fatal(outcome::usage,
                  parry::ctl::printable("error: --filter " + f +
                                        ": must be KEY=VALUE with a value"));
    // The server ignores words it does not know: a misspelt key would match every
    // incident, so only the list's filters are taken.
    auto key = f.substr(0, eq);
    if (key != "status" && key != "severity" && key != "device_id" && key != "since" &&
        key != "until")
      throw fatal(outcome::usage,
                  parry::ctl::printable("error: --filter " + key +
                                        ": not a filter of the incident list (status, "
                                        "severity, device_id, since, until)"));
    params.emplace_back(key, f.substr(eq + 1));
  }
  params.emplace_back("limit", "500");
  std::vector<std::string> ids;
  std::string cursor;
  do {
    auto page = params;
    if (!cursor.empty()) page.emplace_back("cursor", cursor);
    auto r = s.call("GET", "/api/v1/incidents" + parry::ctl::query_string(page));
    for (const auto& inc : sub(r.body, "incidents"))
      ids.push_back(str(inc, "incident_id"));
    if (ids.size() > most)
      throw fatal(outcome::usage, "error: more than 100000 incidents match; narrow "
                                  "them with --filter");
    cursor = str(r.body, "next_cursor");
  } while (!cursor.empty());
  return ids;
}

/// The state an action ended in, polled until `deadline` ("" when not final by then).
std::string final_state(session& s, const std::string& id, steady::time_point deadline) {
  for (;;) {
    auto r = s.call("GET", id_path("actions", id));
    const auto& a = sub(r.body, "action");
    if (parry::ctl::outcome_for_action(a)) return str(a, "state");
    if (steady::now() >= deadline) return {};
    std::this_thread::sleep_for(poll_interval);
  }
}

/// The same action on the detection of every incident matching the filters: a
/// canary first when asked (the rest only once every canary action completed), then
/// POST /actions/bulk in batches. Exit 0 only when every target was registered (and,
/// with --wait, completed).
int cmd_respond_all(session& s, const action_request& a) {
  require_confirmable(a.yes);
  if (!a.incident.empty() || !a.event.empty())
    throw fatal(outcome::usage, "error: --all-incidents acts on every matching "
                                "incident's detection: leave out --incident and --event");
  if (a.type == "start_process")
    throw fatal(outcome::usage, "error: start-process runs on one incident's device at a "
                                "time: use --incident");
  auto ids = matching_incidents(s, a.filters);
  if (ids.empty()) {
    std::cout << "no incidents match\n";
    return 0;
  }
  std::string what = a.type + " on the detection of " + std::to_string(ids.size()) +
                     " incident" + (ids.size() == 1 ? "" : "s");
  for (std::size_t i = 0; i < ids.size() && i < 5; ++i)
    what += (i == 0 ? ": " : ", ") + ids[i];
  if (ids.size() > 5) what += ", ...";
  if (a.canary > 0)
    what += "\n(canary: " + std::to_string(std::min(a.canary, ids.size())) +
            " first; the rest only if they complete)";
  confirm(parry::ctl::printable(what), a.yes);
  json body{{"type", a.type}, {"comment", a.comment}, {"params", json::object()}};
  password_scrub scrub{body};
  if (parry::ctl::needs_password(a.type, s.call("GET", "/api/v1/session").body))
    body["password"] =
        own_password(a.password_stdin, "Your password (confirms " + a.type + "): ");
  std::size_t registered = 0, refused = 0;
  std::vector<std::string> actions;
  // Registers ids[from, to) in batches the server takes; prints each outcome.
  auto send = [&](std::size_t from, std::size_t to) {
    for (std::size_t at = from; at < to; at += 1000) {
      body["targets"] = json::array();
      for (std::size_t i = at; i < std::min(to, at + 1000); ++i)
        body["targets"].push_back(
            json{{"incident_id", ids[i]}, {"target", {{"kind", "detection"}}}});
      auto r = s.call("POST", "/api/v1/actions/bulk", &body);
      const auto& results = sub(r.body, "results");
      if (!results.is_array() || results.size() != body["targets"].size())
        throw fatal(outcome::server_error,
                    "error: bad_response: the server did not answer for every target");
      for (const auto& one : results) {
        const auto& act = sub(one, "action");
        std::string line = str(one, "incident_id") + ": ";
        if (act.is_object()) {
          ++registered;
          actions.push_back(str(act, "action_id"));
          line += "action " + str(act, "action_id") + " " + str(act, "state");
        } else {
          ++refused;
          const auto& err = sub(one, "error");
          line += "refused: " + str(err, "code") + ": " + str(err, "message");
        }
        if (!s.opts().json) std::cout << parry::ctl::printable(line) << '\n';
      }
      if (s.opts().json) print_json(r);
    }
  };
  auto budget =
      std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(a.timeout));
  std::size_t first = std::min(a.canary, ids.size());
  if (first > 0) {
    send(0, first);
    auto deadline = steady::now() + budget;
    for (const auto& id : actions) {
      auto state = final_state(s, id, deadline);
      if (state != "completed")
        throw fatal(outcome::server_error,
                    parry::ctl::printable(
                        "error: canary: action " + id + " " +
                        (state.empty() ? "not final after the timeout" : state) +
                        "; the other " + std::to_string(ids.size() - first) +
                        " incidents were not acted on"));
    }
    if (refused > 0)
      throw fatal(outcome::server_error, "error: canary: " + std::to_string(refused) +
                                             " of " + std::to_string(first) +
                                             " refused; the other " +
                                             std::to_string(ids.size() - first) +
                                             " incidents were not acted on");
    if (!s.opts().json)
      std::cout << "canary: " << first << " completed; going on with the rest\n";
  }
  send(first, ids.size());
  std::size_t failed = 0;
  if (a.wait) {
    auto deadline = steady::now() + budget;
    for (std::size_t i = first; i < actions.size(); ++i)
      failed += final_state(s, actions[i], deadline) != "completed";
  }
  if (!s.opts().json)
    std::cout << "registered " << registered << ", refused " << refused
              << (a.wait ? ", not completed " + std::to_string(failed) : std::string{})
              << '\n';
  return registered == ids.size() && failed == 0
             ? 0
             : parry::ctl::exit_code(outcome::server_error);
}

int cmd_cancel(session& s, const std::string& id, const std::string& comment) {
  json body{{"comment", comment}};
  auto r = s.call("POST", id_path("actions", id) + "/cancel", &body);
  if (s.opts().json) return print_json(r), 0;
  const auto& a = sub(r.body, "action");
  std::cout << parry::ctl::printable("action " + parry::ctl::cell(a, "action_id") + " " +
                                     parry::ctl::cell(a, "type") + ": " +
                                     parry::ctl::cell(a, "state"))
            << '\n';
  return 0;
}

/// The options of `reverse`.
struct reverse_request {
  std::string comment;
  bool wait = false;
  double timeout = 60;
  bool yes = false;
  bool password_stdin = false;
};

int cmd_reverse(session& s, const std::string& id, const reverse_request& q) {
  require_confirmable(q.yes);
  auto original = s.call("GET", id_path("actions", id));
  const json& a = sub(original.body, "action");
  std::string type = str(a, "type");
  std::string reverse = parry::ctl::reverse_type(type);
  // The server would refuse these too (409); saying so here spares the confirmation
  // and the password.
  auto refuse = [&](const std::string& why) {
    throw fatal(outcome::server_error,
                parry::ctl::printable("error: not_applicable: action " + id + " " + why));
  };
  if (reverse.empty())
    refuse("is " + (type.empty() ? std::string("of no known type") : "a " + type) +
           "; only isolate, prevent_run and quarantine can be reversed");
  if (!str(a, "reversed_by").empty())
    refuse("is already reversed by " + str(a, "reversed_by"));
  if (str(a, "state") != "completed")
    refuse("is " + str(a, "state") + "; only a completed action can be reversed");

  // Whether the reverse needs a password is the server's setting, published with
  // the incident's available actions.
  json available;
  if (!str(a, "incident_id").empty())
    available = s.call("GET", available_path(str(a, "incident_id"))).body;
  confirm(parry::ctl::describe_reverse(a, reverse), q.yes);
  json body{{"comment", q.comment}};
  password_scrub scrub{body};
  if (parry::ctl::needs_password(reverse, available))
    body["password"] =
        own_password(q.password_stdin, "Your password (confirms " + reverse + "): ");
  auto r = s.call("POST", id_path("actions", id) + "/reverse", &body);
  return registered(s, r, q.wait, q.timeout);
}

void add_action_options(CLI::App* cmd, action_request& a) {
  auto* one =
      cmd->add_option("--incident", a.incident, "incident the action responds to");
  auto* all = cmd->add_flag("--all-incidents", a.all_incidents,
                            "act on the detection of every incident --filter keeps");
  one->excludes(all);
  cmd->add_option("--filter", a.filters,
                  "with --all-incidents: KEY=VALUE as GET /incidents takes it (status, "
                  "severity, device_id, since, until); repeatable");
  auto* filter = cmd->get_option("--filter");
  filter->needs(all);
  cmd->add_option("--canary", a.canary,
                  "with --all-incidents: act on this many first and go on only when "
                  "every one of them completed")
      ->needs(all);
  cmd->add_option("--event", a.event,
                  "target this event of the chain instead of the detection");
  cmd->add_option("--comment", a.comment, "free text kept with the action");
  cmd->add_option(
         "--idempotency-key", a.idempotency_key,
         "a retry with the same key returns the first action instead of a new one")
      ->excludes("--all-incidents")
      ->check([](const std::string& k) {
        return k.size() <= 128 ? std::string{} : std::string("at most 128 characters");
      });
  add_wait_options(cmd, a.wait, a.timeout);
  add_confirm_options(cmd, a.yes, a.password_stdin);
}

} // namespace

command_group add_action_commands(CLI::App& app) {
  struct options {
    std::string id;
    std::string device;
    std::string incident_filter;
    std::string state;
    int limit = 0;
    std::string comment;
    reverse_request reverse_req;
    double follow_timeout = 60;
    std::vector<std::pair<CLI::App*, std::unique_ptr<action_request>>> action_cmds;
  };
  auto o = std::make_shared<options>();
  auto* actions = app.add_subcommand("actions", "list response actions, newest first");
  actions->add_option("--device", o->device, "only this device");
  actions->add_option("--incident", o->incident_filter, "only this incident");
  actions->add_option("--state", o->state,
                      "only this state (registered, queued, sent, ...)");
  actions->add_option("--limit", o->limit, "at most this many")->check(positive);
  auto* action = app.add_subcommand("action", "show an action and its transitions");
  action->add_option("id", o->id, "action id")->required();

  struct action_command {
    const char* name;
    const char* help;
  };
  const action_command action_commands[] = {
      {"isolate", "isolate the incident's device from the network"},
      {"release", "release the incident's device from isolation"},
      {"prevent-run", "stop the target's file from being run again"},
      {"quarantine", "move the target's file into quarantine"},
      {"delete-file", "delete the target's file"},
      {"terminate", "terminate the target's process"},
      {"start-process", "start a process on the incident's device"}};
  for (const auto& c : action_commands) {
    auto req = std::make_unique<action_request>();
    req->type = parry::ctl::action_type_for_command(c.name);
    auto* cmd = app.add_subcommand(c.name, c.help);
    add_action_options(cmd, *req);
    if (req->type == "start_process") {
      cmd->add_option("--path", req->path, "absolute path of the executable")->required();
      cmd->add_option("--cwd", req->cwd, "absolute working directory");
      cmd->add_option("--args", req->args,
                      "startup arguments as one string, split by the device's rules "
                      "(shell words, or CommandLineToArgvW on Windows; never run by a "
                      "shell) and shown before you confirm; use --args=\"-x ...\" when "
                      "it starts with -");
    }
    o->action_cmds.emplace_back(cmd, std::move(req));
  }

  auto* cancel =
      app.add_subcommand("cancel", "cancel an action the agent has not accepted");
  cancel->add_option("id", o->id, "action id")->required();
  cancel->add_option("--comment", o->comment, "why");
  auto* reverse = app.add_subcommand(
      "reverse", "undo a completed isolate, prevent-run or quarantine");
  reverse->add_option("id", o->id, "action id")->required();
  reverse->add_option("--comment", o->reverse_req.comment, "why");
  add_wait_options(reverse, o->reverse_req.wait, o->reverse_req.timeout);
  add_confirm_options(reverse, o->reverse_req.yes, o->reverse_req.password_stdin);

  auto* follow_cmd = app.add_subcommand("follow", "wait for an action to end");
  follow_cmd->add_option("id", o->id, "action id")->required();
  follow_cmd->add_option("--timeout", o->follow_timeout, "seconds to wait (default 60)")
      ->check(positive);

  return [=](session& s) -> std::optional<int> {
    if (actions->parsed())
      return cmd_actions(s, o->device, o->incident_filter, o->state, o->limit);
    if (action->parsed()) return cmd_action(s, o->id);
    for (const auto& [cmd, req] : o->action_cmds) {
      if (!cmd->parsed()) continue;
      if (req->all_incidents) return cmd_respond_all(s, *req);
      if (req->incident.empty())
        throw fatal(outcome::usage, "error: --incident or --all-incidents is required");
      return cmd_respond(s, *req);
    }
    if (cancel->parsed()) return cmd_cancel(s, o->id, o->comment);
    if (reverse->parsed()) return cmd_reverse(s, o->id, o->reverse_req);
    if (follow_cmd->parsed()) return follow(s, o->id, o->follow_timeout);
    return std::nullopt;
  };
}

} // namespace parry::ctl
