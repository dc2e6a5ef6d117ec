import Foundation
import HTTPTypes
import Hummingbird
import Logging

extension Request {
    /// The body, refused with 413 beyond `limit` bytes (checked on Content-Length first, then on
    /// what actually arrives).
    func collectBody(limit: Int) async throws -> ByteBuffer {
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError.payloadTooLarge(limit: limit)
        }
        var buffer = ByteBuffer()
        for try await chunk in body {
            if buffer.readableBytes + chunk.readableBytes > limit { throw APIError.payloadTooLarge(limit: limit) }
            var chunk = chunk
            buffer.writeBuffer(&chunk)
        }
        return buffer
    }
}

