import Foundation
import Hummingbird

/// `POST /tokenize` and `POST /detokenize`, in the shape llama.cpp's and vLLM's servers use, with
/// the model's own tokenizer. Text is a user's text: special-token text stays text, as in chat.
struct TokenizeController: Sendable {
    let service: ChatService

    struct TokenizeBody: Decodable {
        var model: String?
        /// llama.cpp names the text `content`, vLLM `prompt`.
        var content: String?
        var prompt: String?
        /// Add the beginning-of-sequence token where the model uses one (vLLM's `add_special_tokens`).
        var addSpecial: Bool?
        var addSpecialTokens: Bool?
        /// Return `{"id", "piece"}` objects instead of bare ids (llama.cpp).
        var withPieces: Bool?
        enum CodingKeys: String, CodingKey {
            case model, content, prompt, addSpecial = "add_special", addSpecialTokens = "add_special_tokens"
            case withPieces = "with_pieces"
        }
    }

    struct DetokenizeBody: Decodable {
        var model: String?
        var tokens: [Int]
    }

    /// A token with its text (`with_pieces`).
    struct Piece: Encodable {
        var id: Int
        var piece: String
    }

    struct TokenizeResponse: APIResponse {
        enum Tokens: Encodable {
            case ids([Int])
            case pieces([Piece])
            func encode(to encoder: Encoder) throws {
                switch self {
                case .ids(let ids): try ids.encode(to: encoder)
                case .pieces(let pieces): try pieces.encode(to: encoder)
                }
            }
        }
        var tokens: Tokens
        var count: Int
        var maxModelLen: Int
        enum CodingKeys: String, CodingKey { case tokens, count, maxModelLen = "max_model_len" }
    }

    struct DetokenizeResponse: APIResponse {
        /// llama.cpp's name; vLLM's `prompt` carries the same text.
        var content: String
        var prompt: String
    }

    /// At the root, as llama.cpp and vLLM serve them, behind the same key check as `/v1`.
    func addRoutes(to router: Router<ServerContext>, auth: AuthMiddleware) {
        router.group("tokenize").add(middleware: auth).post { request, context in try await tokenize(request, context: context) }
        router.group("detokenize").add(middleware: auth).post { request, context in try await detokenize(request, context: context) }
    }

    func tokenize(_ request: Request, context: ServerContext) async throws -> TokenizeResponse {
        _ = try context.requireUser()
        let buffer = try await request.collectBody(limit: service.configuration.maxBodyBytes)
        try OpenAIFields.check(
            Data(buffer.readableBytesView), supported: ["model", "content", "prompt", "add_special", "add_special_tokens", "with_pieces"])
        let body = try decodeBody(TokenizeBody.self, from: buffer)
        if body.content != nil && body.prompt != nil {
            throw APIError.invalidRequest("Send the text as 'content' or as 'prompt', not both.", param: "prompt")
        }
        guard let text = body.content ?? body.prompt else {
            throw APIError.invalidRequest("Missing required field 'content' (or 'prompt').", param: "content")
        }
        let engine = try service.catalog.engine(named: body.model)
        let ids: [Int]
        do {
            ids = try engine.tokenize(text, addSpecial: body.addSpecial ?? body.addSpecialTokens ?? true)
        } catch {
            throw APIError.from(engine: error)
        }
        let tokens: TokenizeResponse.Tokens =
            body.withPieces == true
            ? .pieces(ids.map { Piece(id: $0, piece: tokenString(engine.tokenBytes($0))) }) : .ids(ids)
        return TokenizeResponse(tokens: tokens, count: ids.count, maxModelLen: engine.modelInfo.contextLength)
    }

    func detokenize(_ request: Request, context: ServerContext) async throws -> DetokenizeResponse {
        _ = try context.requireUser()
        let buffer = try await request.collectBody(limit: service.configuration.maxBodyBytes)
        try OpenAIFields.check(Data(buffer.readableBytesView), supported: ["model", "tokens"])
        let body = try decodeBody(DetokenizeBody.self, from: buffer)
        let engine = try service.catalog.engine(named: body.model)
        let vocabulary = engine.vocabularySize
        if case let (i, bad)? = body.tokens.enumerated().first(where: { $0.element < 0 || $0.element >= vocabulary }) {
            throw APIError.invalidRequest("tokens[\(i)] = \(bad) is not a token id of this model (0..<\(vocabulary)).", param: "tokens")
        }
        do {
            let text = try engine.detokenize(body.tokens)
            return DetokenizeResponse(content: text, prompt: text)
        } catch {
            throw APIError.from(engine: error)
        }
    }
}
