#pragma once

// GET /api/v1/events after the upgrade: one WebSocket that carries the event hub's
// messages to a signed-in console (docs/rest-api.md, "Live events").

#include <functional>
#include <memory>

#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "server/event_hub.hpp"

namespace parry {

/// Answers false once the session the stream was opened with is known to have ended
/// (not when the server was too busy to say). Calls its argument on the stream's
/// executor.
using session_check = std::function<void(std::function<void(bool)>)>;

/// Completes the WebSocket handshake for `req` on `stream` and runs the stream until
/// either side closes. `hold` lives as long as the connection (its place in the
/// connection limits).
void start_event_stream(boost::beast::ssl_stream<boost::beast::tcp_stream> stream,
                        boost::beast::http::request<boost::beast::http::string_body> req,
                        std::shared_ptr<event_hub> hub, session_check check,
                        std::shared_ptr<void> hold, event_stream_options opts = {});

} // namespace parry
