import Foundation
import Hummingbird

/// Every error the API returns, in OpenAI's shape:
/// `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`.
/// Handlers throw these; Hummingbird turns them into responses through `HTTPResponseError`,
/// so the mapping to HTTP lives here and only here.
public struct APIError: Error, HTTPResponseError, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Seconds for the `Retry-After` header (429, 503).
    public var retryAfter: Int?

    public init(
        status: HTTPResponse.Status, message: String, type: String, param: String? = nil,
        code: String? = nil, retryAfter: Int? = nil
    ) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status.code) \(code ?? type): \(message)" }

    // MARK: The catalogue

    public static func invalidRequest(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }
    public static func contextLengthExceeded(promptTokens: Int, limit: Int, param: String = "messages") -> APIError {
        APIError(
            status: .badRequest,
            message:
                "This model's maximum context length is \(limit) tokens. However, your messages resulted in \(promptTokens) tokens. Please reduce the length of the messages.",
            type: "invalid_request_error", param: param, code: "context_length_exceeded")
    }
    public static func unauthorized(_ message: String) -> APIError {
        APIError(status: .unauthorized, message: message, type: "invalid_request_error", code: "invalid_api_key")
    }
    public static func forbidden(_ message: String) -> APIError {
        APIError(status: .forbidden, message: message, type: "permission_error", code: "forbidden")
    }
    public static func notFound(_ message: String, param: String? = nil, code: String = "not_found") -> APIError {
        APIError(status: .notFound, message: message, type: "invalid_request_error", param: param, code: code)
    }
    public static func modelNotFound(_ model: String, available: [String]) -> APIError {
        notFound(
            "The model '\(model)' does not exist. Available: \(available.joined(separator: ", ")).",
            param: "model", code: "model_not_found")
    }
    public static let conversationNotFound = notFound("No such conversation.", code: "conversation_not_found")
    public static func conflict(_ message: String) -> APIError {
        APIError(status: .conflict, message: message, type: "invalid_request_error", code: "conflict")
    }
    public static func payloadTooLarge(limit: Int) -> APIError {
        APIError(
            status: .contentTooLarge, message: "The request body is larger than the limit of \(limit) bytes.",
            type: "invalid_request_error", code: "request_too_large")
    }
    public static func busy(retryAfter: Int) -> APIError {
        APIError(
            status: .tooManyRequests,
            message: "The server is busy with other replies. Retry in \(retryAfter) s.",
            type: "rate_limit_error", code: "rate_limit_exceeded", retryAfter: retryAfter)
    }
    /// A user's requests-per-minute limit (`Quotas`).
    public static func rateLimited(_ message: String, retryAfter: Int) -> APIError {
        APIError(
            status: .tooManyRequests, message: message + " Retry in \(retryAfter) s.",
            type: "rate_limit_error", code: "rate_limit_exceeded", retryAfter: retryAfter)
    }
    /// A user's daily token limit (`Quotas`), as OpenAI names a used-up quota.
    public static func quotaExceeded(_ message: String, retryAfter: Int) -> APIError {
        APIError(
            status: .tooManyRequests, message: message + " Retry in \(retryAfter) s.",
            type: "insufficient_quota", code: "insufficient_quota", retryAfter: retryAfter)
    }
    public static let loading = APIError(
        status: .serviceUnavailable, message: "The model is still loading. Retry shortly.",
        type: "server_error", code: "model_loading", retryAfter: 5)
    public static let shuttingDown = APIError(
        status: .serviceUnavailable, message: "The server is shutting down.",
        type: "server_error", code: "shutting_down", retryAfter: 10)
    /// Logged and counted only: the client that would read it is gone (nginx's 499).
    public static let clientClosed = APIError(
        status: .init(code: 499, reasonPhrase: "Client Closed Request"), message: "The client closed the connection before the reply.",
        type: "invalid_request_error", code: "client_closed")
    public static let storeUnavailable = APIError(
        status: .serviceUnavailable, message: "The database cannot be reached right now. Retry shortly.",
        type: "server_error", code: "store_unavailable", retryAfter: 5)
    public static let storageFull = APIError(
        status: .init(code: 507, reasonPhrase: "Insufficient Storage"),
        message: "The server's disk is full: nothing new can be stored right now. Stored conversations can still be read.",
        type: "server_error", code: "storage_full")
    public static func unavailable(_ message: String) -> APIError {
        APIError(status: .serviceUnavailable, message: message, type: "server_error", code: "unavailable")
    }
    public static func internalError(_ message: String) -> APIError {
        APIError(status: .internalServerError, message: message, type: "server_error", code: "internal_error")
    }

    /// How an engine's error reads to a client.
    public static func from(engine error: Error) -> APIError {
        switch error {
        case let api as APIError: return api
        case let engine as ChatEngineError:
            switch engine {
            case .busy(let s): return .busy(retryAfter: s)
            case .contextLengthExceeded(let p, let l): return .contextLengthExceeded(promptTokens: p, limit: l)
            case .invalidRequest(let m): return .invalidRequest(m)
            case .failed(let m): return .internalError("Generation failed: \(m)")
            }
        default: return .internalError("Generation failed: \(error)")
        }
    }

    // MARK: Encoding

    struct Body: Codable, Equatable {
        struct Detail: Codable, Equatable {
            var message: String
            var type: String
            var param: String?
            var code: String?
            // Explicit nulls, as OpenAI sends them.
            func encode(to encoder: Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(message, forKey: .message)
                try c.encode(type, forKey: .type)
                try c.encode(param, forKey: .param)
                try c.encode(code, forKey: .code)
            }
        }
        var error: Detail
    }

    /// What the client reads: the response body, or an SSE `data:` payload once a stream has started.
    var body: Body { Body(error: .init(message: message, type: type, param: param, code: code)) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try jsonResponse(body, status: status)
        if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
        return response
    }
}
