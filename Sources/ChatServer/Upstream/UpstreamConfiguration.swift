import Foundation

/// One OpenAI-compatible server whose models this server offers as `NAME/MODEL`.
public struct UpstreamConfiguration: Sendable, Equatable {
    /// The prefix of its models' ids and the `upstream` label of its metrics.
    public var name: String
    /// Scheme, host, port and any path prefix, without a trailing `/v1`: `/v1/models` and
    /// `/v1/chat/completions` are appended.
    public var baseURL: String
    /// Sent as `Authorization: Bearer KEY`; never logged.
    public var key: String?
    /// Longest wait from sending a request to the response's head.
    public var firstByteTimeout: Duration
    /// Longest silence between two pieces of a response body.
    public var idleTimeout: Duration
    /// How often the model list is read again while the upstream answers.
    public var refreshInterval: Duration
    /// How often an upstream that does not answer is tried again.
    public var retryInterval: Duration
    /// Context length of a model whose listing does not say (`context_length` is ours, not OpenAI's).
    public var defaultContextLength: Int
    /// Requests one user may have running on this upstream; more get 429.
    public var maxRequestsPerUser: Int

    public init(
        name: String, baseURL: String, key: String? = nil, firstByteTimeout: Duration = .seconds(30),
        idleTimeout: Duration = .seconds(60), refreshInterval: Duration = .seconds(60), retryInterval: Duration = .seconds(5),
        defaultContextLength: Int = 32768, maxRequestsPerUser: Int = 16
    ) {
        self.name = name
        self.baseURL = baseURL
        self.key = key
        self.firstByteTimeout = firstByteTimeout
        self.idleTimeout = idleTimeout
        self.refreshInterval = refreshInterval
        self.retryInterval = retryInterval
        self.defaultContextLength = defaultContextLength
        self.maxRequestsPerUser = maxRequestsPerUser
    }

    var modelsURL: String { baseURL + "/v1/models" }
    var chatCompletionsURL: String { baseURL + "/v1/chat/completions" }

    /// The environment variable holding the key of upstream `name`: `SARVAM_UPSTREAM_<NAME>_KEY`,
    /// the name upper-cased with `-` as `_`.
    public static func keyVariable(name: String) -> String {
        "SARVAM_UPSTREAM_\(name.uppercased().replacingOccurrences(of: "-", with: "_"))_KEY"
    }

    /// `NAME=URL` as given to `--upstream`: a name of letters, digits, `-` and `_`, and an http(s) URL
    /// (a trailing `/` or `/v1` is dropped). Throws a message saying what was expected.
    public static func parse(_ text: String) throws -> (name: String, baseURL: String) {
        let expected = "expected NAME=URL (e.g. openai=https://api.openai.com), found \(text.debugDescription)"
        guard let equals = text.firstIndex(of: "=") else { throw UpstreamSettingError(expected) }
        let name = text[..<equals].trimmingCharacters(in: .whitespaces)
        var url = text[text.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_"))
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ allowed.contains($0) && $0.isASCII }) else {
            throw UpstreamSettingError("the name must be letters, digits, '-' or '_'; \(expected)")
        }
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = parsed.host, !host.isEmpty
        else {
            throw UpstreamSettingError("the URL must be http:// or https:// with a host; \(expected)")
        }
        while url.hasSuffix("/") { url.removeLast() }
        if url.hasSuffix("/v1") { url.removeLast(3) }
        return (name, url)
    }
}

public struct UpstreamSettingError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
