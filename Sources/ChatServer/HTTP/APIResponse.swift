import Foundation
import HTTPTypes
import Hummingbird

/// A JSON response body: a route returns it and Hummingbird asks it for the response.
///
/// Keys are spelled by each type's `CodingKeys` (snake_case, as OpenAI's API). Clients expect some
/// keys to be there with a `null` value (`finish_reason`, `logprobs`, ...): synthesized `Encodable`
/// leaves nil optionals out (`encodeIfPresent`), so types with such keys write `encode(to:)` and
/// use `encode(_:forKey:)`, which writes the null.
protocol APIResponse: ResponseEncodable, Sendable {}

extension APIResponse {
    /// Our encoder rather than the context's, whose content type carries a charset parameter.
    func response(from request: Request, context: some RequestContext) throws -> Response {
        try jsonResponse(self)
    }
}

/// `value` as an `application/json` response.
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: try JSONEncoder.api.encode(value))))
}

extension JSONEncoder {
    /// What the API writes: compact, keys sorted (a stable order for logs and diffs), `/` unescaped.
    static var api: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

/// Server-sent events framing. The JSON of a `data:` line never holds a raw newline (the encoder
/// escapes them in strings), so one line carries a whole value.
enum SSE {
    static func data(_ value: some Encodable) throws -> String { "data: \(try json(value))\n\n" }
    static func event(_ name: String, _ value: some Encodable) throws -> String { "event: \(name)\ndata: \(try json(value))\n\n" }
    /// A comment line: ignored by clients, keeps proxies from closing an idle stream.
    static let ping = ": ping\n\n"
    static let done = "data: [DONE]\n\n"

    static func json(_ value: some Encodable) throws -> String { String(decoding: try JSONEncoder.api.encode(value), as: UTF8.self) }
}
