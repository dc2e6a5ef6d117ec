import Foundation

/// Which top-level fields of a `/v1` body are honoured, which are accepted without effect, and
/// which are refused. A field the server would not act on gets a 400 naming it (in `param`) rather
/// than being dropped silently; a refused field sent as `null` counts as absent, and a few take
/// their no-op value (`tools: []`, `tool_choice: "none"`, `response_format: {"type": "text"}`,
/// `logit_bias: {}`, `echo: false`, `suffix: ""`, `best_of` equal to `n`).
enum OpenAIFields {
    /// Honoured by `/v1/chat/completions`.
    static let chat: Set<String> = [
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "seed", "stop", "n", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "ignore_eos", "min_tokens",
    ]
    /// Honoured by `/v1/completions`.
    static let completions: Set<String> = [
        "model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "seed", "stop", "n",
        "presence_penalty", "frequency_penalty", "logprobs", "ignore_eos", "min_tokens",
    ]
    /// Accepted and without effect: labels for the caller's own records, and settings that only
    /// matter with a feature the request does not use.
    static let ignored: Set<String> = ["user", "metadata", "store", "service_tier", "parallel_tool_calls"]

    /// Throws a 400 for the first field of the JSON object `data` that is neither honoured (in
    /// `supported`) nor ignored nor at its no-op value. A body that is not a JSON object is left to
    /// the decoder, which explains what is wrong with it.
    static func check(_ data: Data, supported: Set<String>) throws {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return }
        for key in object.keys.sorted() where !supported.contains(key) && !ignored.contains(key) {
            let value = object[key]!
            if value is NSNull || isNoOp(key, value, in: object) { continue }
            throw APIError.invalidRequest(reason(key), param: key, code: "unsupported_parameter")
        }
    }

    private static func isNoOp(_ key: String, _ value: Any, in object: [String: Any]) -> Bool {
        switch key {
        case "tools", "functions": return (value as? [Any])?.isEmpty == true
        case "tool_choice", "function_call": return value as? String == "none"
        case "response_format": return ((value as? [String: Any])?["type"] as? String) == "text" && (value as? [String: Any])?.count == 1
        case "logit_bias": return (value as? [String: Any])?.isEmpty == true
        case "echo": return (value as? Bool) == false
        case "suffix": return value as? String == ""
        case "best_of":
            guard let b = (value as? NSNumber)?.doubleValue else { return false }
            return b == (object["n"] as? NSNumber)?.doubleValue ?? 1
        default: return false
        }
    }

    private static func reason(_ key: String) -> String {
        switch key {
        case "tools", "tool_choice", "functions", "function_call":
            return "'\(key)' is not supported: this server has no tool or function calling."
        case "response_format":
            return "'response_format' is not supported except {\"type\": \"text\"}: this server has no JSON or schema mode."
        case "logit_bias": return "'logit_bias' is not supported."
        case "echo": return "'echo' is not supported; only false."
        case "suffix": return "'suffix' is not supported (no insertion mode)."
        case "best_of": return "'best_of' is not supported except equal to n."
        default: return "Unsupported field '\(key)'."
        }
    }
}
