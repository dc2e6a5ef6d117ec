/// Cuts generated text at the first of the client's `stop` strings, which may arrive split over
/// several deltas. Text that could be the start of a stop string is held back until it is known
/// not to be one, so a client never sees any part of a stop string.
public struct StopSequenceMatcher: Sendable {
    public let stops: [String]
    private var pending = ""

    public init(_ stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }
    }

    /// Feeds one delta; returns the text now safe to emit and whether a stop string was found
    /// (then generation must end and nothing more is emitted).
    public mutating func feed(_ text: String) -> (emit: String, matched: Bool) {
        if stops.isEmpty { return (text, false) }
        pending += text
        var earliest: String.Index?
        for stop in stops {
            if let r = pending.range(of: stop), earliest.map({ r.lowerBound < $0 }) ?? true {
                earliest = r.lowerBound
            }
        }
        if let cut = earliest {
            let emit = String(pending[..<cut])
            pending = ""
            return (emit, true)
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        var hold = 0
        for stop in stops {
            var length = min(stop.count - 1, pending.count)
            while length > hold {
                if pending.hasSuffix(stop.prefix(length)) { hold = length; break }
                length -= 1
            }
        }
        let emit = String(pending.dropLast(hold))
        pending = String(pending.suffix(hold))
        return (emit, false)
    }

    /// At the end of generation: the held-back text, which turned out not to be a stop string.
    public mutating func flush() -> String {
        defer { pending = "" }
        return pending
    }
}
