import Foundation

/// Why a request body that JSONDecoder refused as "not valid JSON" was refused. Foundation's
/// decoder on Linux says only that for bytes that are not UTF-8 and for a number that does not fit
/// an integer field (`"max_tokens": 4.5`), which sends clients looking in the wrong place.
enum BodyDiagnosis {
    /// Byte offset of the first byte that is not part of a valid UTF-8 sequence, nil when all are.
    static func firstInvalidUTF8Offset(_ bytes: some Sequence<UInt8>) -> Int? {
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded): offset += encoded.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    /// The first of `integerFields` (top-level keys) holding a number that is not a whole number
    /// within 64 bits, as a 400 naming it; nil when the body is not a JSON object or none does.
    static func integerFieldError(_ data: Data, integerFields: [String]) -> APIError? {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        for field in integerFields {
            guard let value = object[field], !(value is Bool), let number = value as? NSNumber else { continue }
            let double = number.doubleValue
            let whole = double.rounded() == double
            let inRange = String(cString: number.objCType) != "Q" && abs(double) < 9.2e18
            if !(whole && inRange) {
                return .invalidRequest(
                    "'\(field)' must be an integer\(whole ? " within 64 bits" : ""); got \(number).", param: field)
            }
        }
        return nil
    }
}

/// Request bodies with integer fields, so that a fractional number there is reported by name.
protocol HasIntegerFields {
    static var integerFields: [String] { get }
}

extension ChatCompletionRequest: HasIntegerFields {
    static let integerFields = ["max_tokens", "max_completion_tokens", "seed", "n", "top_logprobs", "min_tokens"]
}

extension CompletionRequest: HasIntegerFields {
    static let integerFields = ["max_tokens", "seed", "n", "logprobs", "min_tokens", "best_of"]
}

extension ReplyBody: HasIntegerFields {
    static let integerFields = ["max_tokens", "seed"]
}

extension CreateConversationBody: HasIntegerFields {
    static let integerFields = ["max_tokens"]
}
