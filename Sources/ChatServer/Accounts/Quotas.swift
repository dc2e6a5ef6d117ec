import Foundation

/// Per-user limits on generation: requests per minute and generated tokens per UTC day. The
/// server's defaults come from flags (none unless set); the admin can set a user's own limits
/// (0: no limit). Counters live in the store, so a fleet's instances count together.
///
/// A generation request is counted when it arrives (`admit`): past the minute's limit it gets 429
/// with `Retry-After` to the next minute; once the day's tokens are used up, 429 until midnight
/// UTC, and a reply never runs past what is left of the day (its `max_tokens` is cut to it). The
/// tokens a reply generated are added when it ends (`charge`).
public struct Quotas: Sendable {
    public static let requestsKind = "requests"
    public static let tokensKind = "tokens"

    let store: any ChatStore
    public let defaults: QuotaLimits
    let now: @Sendable () -> Date

    public init(store: any ChatStore, defaults: QuotaLimits = QuotaLimits(), now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.defaults = defaults
        self.now = now
    }

    /// The limits that apply to the user: their own where set, else the defaults; nil is no limit.
    public func limits(userId: Int64) async throws -> (requestsPerMinute: Int?, tokensPerDay: Int?) {
        let own = try await store.quotaOverrides(userId: userId)
        func effective(_ own: Int?, _ fallback: Int?) -> Int? {
            guard let value = own ?? fallback, value > 0 else { return nil }
            return value
        }
        return (effective(own.requestsPerMinute, defaults.requestsPerMinute), effective(own.tokensPerDay, defaults.tokensPerDay))
    }

    /// Counts one generation request of the user, or refuses it (429). Returns the tokens the reply
    /// may still generate today (nil: no daily limit).
    public func admit(userId: Int64) async throws -> Int? {
        let (rpm, tpd) = try await limits(userId: userId)
        let time = now().timeIntervalSince1970
        var used = 0
        if let tpd {
            used = try await store.usage(userId: userId, kind: Self.tokensKind, window: Self.day(time))
            if used >= tpd {
                throw APIError.quotaExceeded(
                    "You have used your \(tpd) generated tokens for today (UTC).", retryAfter: Self.secondsToNextDay(time))
            }
        }
        if let rpm {
            let count = try await store.addUsage(userId: userId, kind: Self.requestsKind, window: Self.minute(time), amount: 1)
            if count > rpm {
                throw APIError.rateLimited(
                    "Rate limit reached: \(rpm) requests per minute.", retryAfter: Self.secondsToNextMinute(time))
            }
        }
        guard let tpd else { return nil }
        return tpd - used
    }

    /// Adds the tokens a reply generated to the user's day.
    public func charge(userId: Int64, tokens: Int) async throws {
        guard tokens > 0 else { return }
        _ = try await store.addUsage(userId: userId, kind: Self.tokensKind, window: Self.day(now().timeIntervalSince1970), amount: tokens)
    }

    /// What `/api/me` shows: the limits and the use so far.
    public func status(userId: Int64) async throws -> QuotaStatus {
        let (rpm, tpd) = try await limits(userId: userId)
        let time = now().timeIntervalSince1970
        return QuotaStatus(
            requestsPerMinute: rpm, tokensPerDay: tpd,
            requestsThisMinute: try await store.usage(userId: userId, kind: Self.requestsKind, window: Self.minute(time)),
            tokensToday: try await store.usage(userId: userId, kind: Self.tokensKind, window: Self.day(time)))
    }

    static func minute(_ t: TimeInterval) -> Int64 { Int64((t / 60).rounded(.down)) }
    static func day(_ t: TimeInterval) -> Int64 { Int64((t / 86_400).rounded(.down)) }
    static func secondsToNextMinute(_ t: TimeInterval) -> Int { max(1, Int((Double(minute(t) + 1) * 60 - t).rounded(.up))) }
    static func secondsToNextDay(_ t: TimeInterval) -> Int { max(1, Int((Double(day(t) + 1) * 86_400 - t).rounded(.up))) }
}

/// A user's limits (nil: none) and what they used in the current minute and UTC day.
public struct QuotaStatus: Sendable, Equatable, Codable {
    public var requestsPerMinute: Int?
    public var tokensPerDay: Int?
    public var requestsThisMinute: Int
    public var tokensToday: Int

    enum CodingKeys: String, CodingKey {
        case requestsPerMinute = "requests_per_minute", tokensPerDay = "tokens_per_day"
        case requestsThisMinute = "requests_this_minute", tokensToday = "tokens_today"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(requestsPerMinute, forKey: .requestsPerMinute)  // null: no limit
        try c.encode(tokensPerDay, forKey: .tokensPerDay)
        try c.encode(requestsThisMinute, forKey: .requestsThisMinute)
        try c.encode(tokensToday, forKey: .tokensToday)
    }
}
