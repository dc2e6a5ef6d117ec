import Hummingbird
import NIOCore

extension Request {
    /// The body, refused with 413 in the API's error shape beyond `limit` bytes: at once when the
    /// Content-Length says so, else when more arrives (Hummingbird's collection stops there with a
    /// `NIOTooManyBytesError`, which on its own would be a 413 without a body).
    func collectBody(limit: Int) async throws -> ByteBuffer {
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError.payloadTooLarge(limit: limit)
        }
        do {
            return try await body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw APIError.payloadTooLarge(limit: limit)
        }
    }
}
