// The `api` source (flowd-go's REST API plugin): flows started and ended by HTTP requests.
//
// [source.api]
// type = "api"
// listen = "127.0.0.1:7777"   # ADDRESS:PORT (flowd-go's default); port 0 picks a free one
// token = ""                  # bearer token every request must carry ("Authorization: Bearer
//                             # TOKEN"); required when listen is not a loopback address
// max_body = 65536            # bytes; a larger request body is refused (413)
// threads = 8                 # HTTP worker threads (civetweb): requests served at once
//
// Routes (flowd-go's): GET / lists them (JSON); GET /dummy/start and GET /dummy/end announce
// a fixed test flow (TCP [::1]:2345 → [::1]:5777, experiment 1, activity 1: the registry's
// default/default); POST /flow (Content-Type: application/json) takes one flow event, in
// flowd-go's shape or as a firefly document (flowmark's schema) — see flow_request.hpp — and
// answers 200 with the event as flowd-go prints it. A request that is refused gets a 4xx
// with a JSON body {"outcome": ..., "message": ...}: 400 (bad JSON, unknown state, a bad or
// missing field), 401 (token), 404, 405 (method; Allow says which), 413 (body over
// max_body), 415 (not application/json); 503 when the service is stopping or its queue
// stays full. Every request is counted by outcome: flowmark_api_requests_total{source,
// outcome}.
//
// Threads: requests are read and parsed on civetweb's threads; their events are handed to
// the service's loop (a bounded queue and an eventfd), which pushes them into the pipeline,
// so that HTTP clients never hold up the other sources. An HTTP client is a sender that can
// be slowed: when the queue is full the request waits (up to 10 s) for room, and its answer
// comes when its event is queued.
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_api_source(SourceFactories& factories);

}  // namespace flowmark::daemon
