import Foundation

/// Splits a `text/event-stream` body, arriving in pieces cut anywhere, into the `data` of its events.
/// Comment lines (`: ping`) and other fields are skipped; several `data:` lines of one event are
/// joined by newlines (the SSE spec's rule). Lines end in `\n` or `\r\n`.
struct ServerSentEventParser {
    private var pending: [UInt8] = []
    private var dataLines: [String] = []

    /// The `data` of every event completed by `bytes`.
    mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> [String] where Bytes.Element == UInt8 {
        pending.append(contentsOf: bytes)
        var events: [String] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var end = newline
            if end > start && pending[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let line = String(decoding: pending[start..<end], as: UTF8.self)
            start = newline + 1
            if line.isEmpty {
                if !dataLines.isEmpty { events.append(dataLines.joined(separator: "\n")) }
                dataLines.removeAll()
            } else if line.hasPrefix("data:") {
                var value = line.dropFirst(5)
                if value.first == " " { value = value.dropFirst() }
                dataLines.append(String(value))
            }
        }
        pending.removeFirst(start)
        return events
    }
}
