import Foundation
import Hummingbird

/// `POST /v1/chat/completions` body, snake_case keys as OpenAI spells them. Which other fields are
/// accepted and which refused is `OpenAIFields`' business (checked before decoding).
struct ChatCompletionRequest: Decodable, Sendable {
    struct Message: Decodable, Sendable {
        var role: String
        var content: String

        enum CodingKeys: String, CodingKey { case role, content }

        /// `content` is a string, an array of `{"type": "text", "text": ...}` parts, or null.
        struct TextPart: Decodable { var type: String; var text: String? }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            role = try c.decode(String.self, forKey: .role)
            if try c.decodeNil(forKey: .content) {
                content = ""
            } else if let text = try? c.decode(String.self, forKey: .content) {
                content = text
            } else {
                let parts: [TextPart]
                do {
                    parts = try c.decode([TextPart].self, forKey: .content)
                } catch {
                    throw DecodingError.typeMismatch(
                        String.self,
                        .init(
                            codingPath: c.codingPath + [CodingKeys.content],
                            debugDescription: "expected a string or an array of text parts"))
                }
                if let other = parts.first(where: { $0.type != "text" }) {
                    throw DecodingError.dataCorrupted(
                        .init(
                            codingPath: c.codingPath + [CodingKeys.content],
                            debugDescription: "only text content is supported; found a part of type '\(other.type)'"))
                }
                content = parts.compactMap(\.text).joined()
            }
        }
    }

    /// `stop`: a string or an array of strings.
    struct Stop: Decodable, Sendable {
        var values: [String]
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() {
                values = []
            } else if let s = try? c.decode(String.self) {
                values = [s]
            } else {
                values = try c.decode([String].self)
            }
        }
    }

    struct StreamOptions: Decodable, Sendable {
        var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }

    var model: String?
    var messages: [Message]
    var stream: Bool?
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var temperature: Double?
    var topP: Double?
    var seed: Int64?
    var stop: Stop?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    var streamOptions: StreamOptions?
    var n: Int?
    var logprobs: Bool?
    var topLogprobs: Int?
    var ignoreEOS: Bool?
    var minTokens: Int?

    enum CodingKeys: String, CodingKey {
        case model, messages, stream, temperature, seed, stop, n, logprobs
        case maxTokens = "max_tokens", maxCompletionTokens = "max_completion_tokens", topP = "top_p"
        case presencePenalty = "presence_penalty", frequencyPenalty = "frequency_penalty", streamOptions = "stream_options"
        case topLogprobs = "top_logprobs", ignoreEOS = "ignore_eos", minTokens = "min_tokens"
    }
}

/// Sampling fields shared by the OpenAI route and the conversation routes, checked the same way.
struct SamplingFields {
    var maxTokens: Int?
    var temperature: Double?
    var topP: Double?
    var seed: Int64?
    var presencePenalty: Double?
    var frequencyPenalty: Double?

    func validated() throws -> SamplingParameters {
        if let m = maxTokens, m < 1 { throw APIError.invalidRequest("max_tokens must be at least 1; got \(m).", param: "max_tokens") }
        if let t = temperature, !(0...2).contains(t) {
            throw APIError.invalidRequest("temperature must be between 0 and 2; got \(t).", param: "temperature")
        }
        if let p = topP, !(p > 0 && p <= 1) { throw APIError.invalidRequest("top_p must be in (0, 1]; got \(p).", param: "top_p") }
        if let p = presencePenalty, !(-2...2).contains(p) {
            throw APIError.invalidRequest("presence_penalty must be between -2 and 2; got \(p).", param: "presence_penalty")
        }
        if let p = frequencyPenalty, !(-2...2).contains(p) {
            throw APIError.invalidRequest("frequency_penalty must be between -2 and 2; got \(p).", param: "frequency_penalty")
        }
        return SamplingParameters(
            temperature: temperature, topP: topP, seed: seed.map { UInt64(bitPattern: $0) },
            presencePenalty: presencePenalty ?? 0, frequencyPenalty: frequencyPenalty ?? 0)
    }
}

/// Decodes a JSON body, turning decoding failures into a 400 that names the field.
func decodeBody<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
    let data = Data(buffer.readableBytesView)
    if data.isEmpty { throw APIError.invalidRequest("The request body is empty; expected a JSON object.") }
    if let offset = BodyDiagnosis.firstInvalidUTF8Offset(data) {
        throw APIError.invalidRequest("The request body is not valid UTF-8 (byte \(offset) is not); JSON must be sent as UTF-8.")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let error as APIError {
        throw error
    } catch let error as DecodingError {
        if case .dataCorrupted(let context) = error, context.codingPath.isEmpty,
            let fields = (T.self as? HasIntegerFields.Type)?.integerFields,
            let named = BodyDiagnosis.integerFieldError(data, integerFields: fields)
        {
            throw named
        }
        throw APIError.from(decoding: error)
    } catch {
        throw APIError.invalidRequest("The request body is not valid JSON: \(error.localizedDescription)")
    }
}

extension APIError {
    static func from(decoding error: DecodingError) -> APIError {
        func path(_ keys: [CodingKey]) -> String {
            var out = ""
            for key in keys {
                if let i = key.intValue { out += "[\(i)]" } else { out += out.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return out
        }
        switch error {
        case .keyNotFound(let key, let context):
            let p = path(context.codingPath + [key])
            return .invalidRequest("Missing required field '\(p)'.", param: p)
        case .typeMismatch(let type, let context):
            let p = path(context.codingPath)
            return .invalidRequest("Field '\(p)' has the wrong type: expected \(Self.jsonTypeName(type)).", param: p)
        case .valueNotFound(let type, let context):
            let p = path(context.codingPath)
            return .invalidRequest("Field '\(p)' is null: expected \(Self.jsonTypeName(type)).", param: p)
        case .dataCorrupted(let context):
            let p = path(context.codingPath)
            if p.isEmpty { return .invalidRequest("The request body is not valid JSON: \(context.debugDescription)") }
            return .invalidRequest("Field '\(p)' is invalid: \(context.debugDescription).", param: p)
        @unknown default:
            return .invalidRequest("The request body could not be decoded: \(error)")
        }
    }

    static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Double.Type: return "a number"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "an array" }
            return "an object"
        }
    }
}
