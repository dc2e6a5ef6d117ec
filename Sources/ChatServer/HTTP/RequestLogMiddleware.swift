import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// One structured line per request, written when the response body is done (so a streamed reply's
/// tokens and full latency are in it), plus the request id in an `x-request-id` header.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let logger: Logger

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
            var metadata: Logger.Metadata = [
                "request_id": "\(requestId)", "method": "\(method)", "path": "\(path)", "status": "\(status)",
                "latency_ms": "\(Int((ContinuousClock.now - start) / .milliseconds(1)))",
            ]
            if let u = s.userId { metadata["user_id"] = "\(u)" }
            if let p = s.prompt { metadata["prompt_tokens"] = "\(p)" }
            if let c = s.completion { metadata["completion_tokens"] = "\(c)" }
            if let o = s.outcome { metadata["outcome"] = "\(o)" }
            if let note { metadata["note"] = "\(note)" }
            logger.info("request", metadata: metadata)
            SarvamMetrics.recordRequest(
                route: metricsRoute(endpoint: context.endpointPath), method: metricsMethod(request.method), status: status,
                duration: ContinuousClock.now - start)
        }
        do {
            var response = try await next(request, context)
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            let status = Int(response.status.code)
            // A HEAD response's body is dropped unwritten: count it now.
            if request.method == .head {
                log(status: status, note: nil)
                return response
            }
            let body = response.body
            response.body = ResponseBody(contentLength: body.contentLength) { writer in
                do {
                    try await body.write(writer)
                    log(status: status, note: nil)
                } catch {
                    log(status: status, note: "body not fully written: \(error)")
                    throw error
                }
            }
            return response
        } catch let error as APIError {
            log(status: Int(error.status.code), note: error.code ?? error.type)
            var response = try error.response(from: request, context: context)
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            return response
        } catch let error as StoreUnavailableError {
            log(status: 503, note: "store_unavailable")
            context.logger.warning("store unavailable", metadata: ["error": "\(error)"])
            var response = try APIError.storeUnavailable.response(from: request, context: context)
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            return response
        } catch let error as HTTPResponseError {
            // Hummingbird's own errors (no such route, bad method...) in the API's error shape.
            let message = error.status == .notFound ? "No route for \(method) \(path)." : "\(error.status.reasonPhrase)."
            let api = APIError(
                status: error.status, message: message,
                type: error.status.code >= 500 ? "server_error" : "invalid_request_error")
            log(status: Int(error.status.code), note: "\(error)")
            var response = try api.response(from: request, context: context)
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            return response
        } catch {
            log(status: 500, note: "\(error)")
            context.logger.error("unexpected error", metadata: ["error": "\(error)"])
            var response = try APIError.internalError("Internal error.").response(from: request, context: context)
            response.headers[HTTPField.Name("x-request-id")!] = requestId
            return response
        }
    }
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
