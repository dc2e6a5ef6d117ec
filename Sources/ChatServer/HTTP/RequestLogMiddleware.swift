import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// One structured line per request, written when the response body is done (so a streamed reply's
/// tokens and full latency are in it), plus the request id in an `x-request-id` header. The tokens a
/// reply generated are charged to its user's daily quota then.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let logger: Logger
    var quotas: Quotas?

    func handle(
        _ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response
    ) async throws -> Response {
        let start = ContinuousClock.now
        let requestId = context.id
        let method = request.method.rawValue
        let path = request.uri.path
        let stats = context.stats
        let logger = self.logger
        @Sendable func log(status: Int, note: String?) {
            let s = stats.snapshot
            let now = ContinuousClock.now
            let route = metricsRoute(endpoint: context.endpointPath)
            var metadata: Logger.Metadata = [
                "request_id": "\(requestId)", "method": "\(method)", "route": "\(route)", "path": "\(path)",
                "status": .stringConvertible(status), "duration_ms": .stringConvertible(Self.milliseconds(now - start)),
            ]
            if let u = s.userId { metadata["user_id"] = .stringConvertible(u) }
            if let c = conversationId(route: route, path: path) { metadata["conversation_id"] = "\(c)" }
            if let p = s.prompt { metadata["prompt_tokens"] = .stringConvertible(p) }
            if let c = s.completion { metadata["completion_tokens"] = .stringConvertible(c) }
            if let first = stats.firstTokenAt { metadata["ttft_ms"] = .stringConvertible(Self.milliseconds(first - start)) }
            if let o = s.outcome { metadata["outcome"] = "\(o)" }
            if let r = stats.route { metadata["tier"] = "\(r.tier)"; metadata["tier_reason"] = "\(r.reason.rawValue)" }
            if let note { metadata["note"] = "\(note)" }
            logger.info("request", metadata: metadata)
            SarvamMetrics.recordRequest(
                route: route, method: metricsMethod(request.method), status: status, duration: now - start)
        }
        do {
            var response = try await RequestStats.$current.withValue(stats) { try await next(request, context) }
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            if let route = stats.route {
                response.headers[.sarvamTier] = route.tier
                response.headers[.sarvamTierReason] = route.reason.rawValue
            }
            let status = Int(response.status.code)
            // A HEAD response's body is dropped unwritten: count it now.
            if request.method == .head {
                log(status: status, note: nil)
                return response
            }
            let body = response.body
            let quotas = self.quotas
            @Sendable func charge() async {
                let s = stats.snapshot
                guard let quotas, let user = s.userId, let tokens = s.completion, tokens > 0 else { return }
                do { try await quotas.charge(userId: user, tokens: tokens) } catch {
                    logger.warning("could not count the reply's tokens", metadata: ["user_id": "\(user)", "error": "\(error)"])
                }
            }
            response.body = ResponseBody(contentLength: body.contentLength) { writer in
                do {
                    try await RequestStats.$current.withValue(stats) { try await body.write(writer) }
                    await charge()
                    log(status: status, note: nil)
                } catch {
                    await charge()
                    log(status: status, note: "body not fully written: \(error)")
                    throw error
                }
            }
            return response
        } catch {
            let (api, note) = Self.apiError(for: error, method: method, path: path, logger: context.logger)
            log(status: Int(api.status.code), note: note)
            var response = try api.response(from: request, context: context)
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            return response
        }
    }

    /// What a thrown error tells the client, and the note for the request's log line; errors the
    /// client did not cause are logged too.
    static func apiError(for error: any Error, method: String, path: String, logger: Logger) -> (APIError, String) {
        switch error {
        case let error as APIError:
            return (error, error.code ?? error.type)
        case let error as StoreUnavailableError:
            logger.warning("store unavailable", metadata: ["error": "\(error)"])
            return (.storeUnavailable, "store_unavailable")
        case let error as StoreFullError:
            logger.error("the disk is full: nothing can be stored", metadata: ["error": "\(error)"])
            return (.storageFull, "storage_full")
        case let error as HTTPResponseError:
            // Hummingbird's own errors (no such route, bad method...) in the API's error shape.
            let message = error.status == .notFound ? "No route for \(method) \(path)." : "\(error.status.reasonPhrase)."
            let api = APIError(
                status: error.status, message: message, type: error.status.code >= 500 ? "server_error" : "invalid_request_error")
            return (api, "\(error)")
        default:
            logger.error("unexpected error", metadata: ["error": "\(error)"])
            return (.internalError("Internal error."), "\(error)")
        }
    }
}

extension RequestLogMiddleware {
    static func milliseconds(_ d: Duration) -> Double { (d / .milliseconds(1) * 10).rounded() / 10 }
}

/// The conversation a request is about, for the log: the `{id}` segment of a
/// `/api/conversations/{id}…` route.
func conversationId(route: String, path: String) -> String? {
    let template = route.split(separator: "/")
    guard template.count >= 3, template[0] == "api", template[1] == "conversations",
        template[2].hasPrefix("{") || template[2].hasPrefix(":")
    else { return nil }
    let parts = path.split(separator: "/")
    return parts.count >= 3 ? String(parts[2]) : nil
}

/// The metrics label of a request's route: the template the router matched (`/api/conversations/{id}`),
/// never the raw path, so ids stay out of the metrics; a path no route matched is `unknown`. The set
/// of labels is the set of routes, whatever clients send.
func metricsRoute(endpoint: String?) -> String {
    guard let endpoint, endpoint.hasPrefix("/") else { return "unknown" }  // nil, or Hummingbird's "NotFound"
    return endpoint
}

/// The method as a metrics label: HTTP allows any token as a method, so unusual ones share `OTHER`.
func metricsMethod(_ method: HTTPRequest.Method) -> String {
    switch method {
    case .get, .head, .post, .put, .patch, .delete, .options: return method.rawValue
    default: return "OTHER"
    }
}
