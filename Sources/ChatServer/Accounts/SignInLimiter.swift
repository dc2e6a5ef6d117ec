import Foundation

/// Counts failed sign-ins per account and per client address over a sliding window, in this
/// process's memory (each instance of a fleet counts its own). Once a key has `limit` failures in
/// the window, sign-ins for it are refused without checking the password until the oldest failure
/// leaves the window; `Retry-After` says when.
public actor SignInLimiter {
    public struct Rule: Sendable {
        public var limit: Int
        public var window: Duration
        public init(limit: Int, window: Duration) {
            self.limit = limit
            self.window = window
        }
    }

    public let perAccount: Rule
    public let perAddress: Rule
    /// Failure times by key ("user:NAME", "addr:ADDRESS"), oldest first.
    private var failures: [String: [ContinuousClock.Instant]] = [:]
    /// Above this many keys, keys with no failure left in their window are dropped.
    private let pruneAbove = 10_000

    public init(perAccount: Rule = Rule(limit: 5, window: .seconds(900)), perAddress: Rule = Rule(limit: 20, window: .seconds(900))) {
        self.perAccount = perAccount
        self.perAddress = perAddress
    }

    static func accountKey(_ name: String) -> String { "user:" + name.lowercased() }
    static func addressKey(_ address: String) -> String { "addr:" + address }

    /// Whole seconds until a sign-in for this account from this address may be tried again; nil when it may now.
    public func retryAfter(account: String, address: String?) -> Int? {
        let now = ContinuousClock.now
        var wait: Duration = .zero
        wait = max(wait, blocked(Self.accountKey(account), perAccount, now: now))
        if let address { wait = max(wait, blocked(Self.addressKey(address), perAddress, now: now)) }
        guard wait > .zero else { return nil }
        return max(1, Int((Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18).rounded(.up)))
    }

    public func recordFailure(account: String, address: String?) {
        let now = ContinuousClock.now
        if failures.count > pruneAbove { prune(now: now) }
        failures[Self.accountKey(account), default: []].append(now)
        if let address { failures[Self.addressKey(address), default: []].append(now) }
    }

    /// A correct password clears the account's failures (not the address's).
    public func recordSuccess(account: String) {
        failures[Self.accountKey(account)] = nil
    }

    private func blocked(_ key: String, _ rule: Rule, now: ContinuousClock.Instant) -> Duration {
        guard var times = failures[key] else { return .zero }
        times.removeAll { now - $0 >= rule.window }
        failures[key] = times.isEmpty ? nil : times
        guard times.count >= rule.limit else { return .zero }
        // Refused until enough failures have left the window to bring the count under the limit.
        return rule.window - (now - times[times.count - rule.limit])
    }

    private func prune(now: ContinuousClock.Instant) {
        let longest = max(perAccount.window, perAddress.window)
        failures = failures.filter { _, times in times.last.map { now - $0 < longest } ?? false }
    }
}
