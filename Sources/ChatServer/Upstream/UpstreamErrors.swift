import Foundation
import Hummingbird

/// How an upstream's failures read to our clients: always naming the upstream, so a client can tell
/// a remote provider's trouble from ours.
enum UpstreamErrors {
    /// Connection refused, name not resolved, connection lost, or the upstream not listed yet (502).
    static func unavailable(_ name: String, _ detail: String) -> APIError {
        APIError(
            status: .badGateway, message: "The upstream '\(name)' cannot be reached: \(detail)", type: "server_error",
            code: "upstream_unavailable")
    }

    /// Nothing arrived within a timeout (504). `phase` says which: the first byte or the next piece.
    static func timeout(_ name: String, phase: String, after: Duration) -> APIError {
        APIError(
            status: .gatewayTimeout, message: "The upstream '\(name)' sent nothing for \(seconds(after)) s (\(phase)).",
            type: "server_error", code: "upstream_timeout")
    }

    /// The upstream ended a streamed reply without finishing it, or sent an error event in it (502).
    static func interrupted(_ name: String, _ detail: String) -> APIError {
        APIError(
            status: .badGateway, message: "The upstream '\(name)' broke off the reply: \(detail)", type: "server_error",
            code: "upstream_interrupted")
    }

    /// An error status from the upstream: a 4xx passes through with its message prefixed by the
    /// upstream's name (the request was at fault); a 5xx becomes 502.
    static func status(_ name: String, code: Int, body: String) -> APIError {
        let detail = try? JSONDecoder().decode(UpstreamErrorBody.self, from: Data(body.utf8)).error
        let message = detail?.message ?? (body.isEmpty ? "HTTP \(code)" : String(body.prefix(500)))
        if (400..<500).contains(code) {
            return APIError(
                status: .init(code: code), message: "\(name): \(message)", type: detail?.type ?? "invalid_request_error",
                param: detail?.param, code: detail?.code)
        }
        return APIError(
            status: .badGateway, message: "The upstream '\(name)' failed with HTTP \(code): \(message)", type: "server_error",
            code: "upstream_error")
    }

    private static func seconds(_ d: Duration) -> String {
        let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return s == s.rounded() ? String(Int(s)) : String(format: "%.1f", s)
    }
}

/// OpenAI's error body, as far as we read it; every field optional (upstreams differ).
struct UpstreamErrorBody: Decodable {
    struct Detail: Decodable {
        var message: String?
        var type: String?
        var param: String?
        var code: String?

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            message = try? c.decodeIfPresent(String.self, forKey: .message)
            type = try? c.decodeIfPresent(String.self, forKey: .type)
            param = try? c.decodeIfPresent(String.self, forKey: .param)
            // Some servers send a number.
            code = (try? c.decodeIfPresent(String.self, forKey: .code)) ?? (try? c.decodeIfPresent(Int.self, forKey: .code)).map { "\($0)" }
        }
        enum CodingKeys: String, CodingKey { case message, type, param, code }
    }
    var error: Detail
}
