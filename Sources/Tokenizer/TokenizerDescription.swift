/// The plain description a tokenizer is built from: what the importer reads out of a GGUF file or a
/// Hugging Face `tokenizer.json`, and what Sarvam's weight file stores as JSON in its header.
public struct TokenizerDescription: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// GPT-2 style byte-level BPE (GGUF `tokenizer.ggml.model = gpt2`): Qwen2, Llama-3.
        case byteLevelBPE = "bpe"
        /// SentencePiece BPE with scores and byte fallback (GGUF `tokenizer.ggml.model = llama`): Llama-2.
        case sentencePiece = "spm"
    }

    /// GGUF token type codes (`tokenizer.ggml.token_type`).
    public enum TokenType: Int, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public var kind: Kind
    /// Pre-tokenizer family: "qwen2", "llama3", "gpt2" or "default" (GGUF `tokenizer.ggml.pre`).
    public var preTokenizer: String
    /// Token id -> token text, as the source spells it (byte-level characters for BPE, `▁` for SPM).
    public var tokens: [String]
    /// One `TokenType` raw value per token.
    public var tokenTypes: [Int]
    /// BPE merges "left right"; the rank of a merge is its index. Empty for SentencePiece.
    public var merges: [String]
    /// SentencePiece scores, one per token. Empty for BPE.
    public var scores: [Float]
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var padTokenId: Int?
    public var unknownTokenId: Int?
    /// Tokens that end an assistant turn; the generator stops on any of them.
    public var endOfTurnTokenIds: [Int]
    public var addBosToken: Bool
    /// SentencePiece: prepend `▁` to the text (GGUF `tokenizer.ggml.add_space_prefix`).
    public var addSpacePrefix: Bool

    public init(
        kind: Kind, preTokenizer: String, tokens: [String], tokenTypes: [Int], merges: [String] = [],
        scores: [Float] = [], bosTokenId: Int? = nil, eosTokenId: Int? = nil, padTokenId: Int? = nil,
        unknownTokenId: Int? = nil, endOfTurnTokenIds: [Int] = [], addBosToken: Bool = false,
        addSpacePrefix: Bool = true
    ) {
        self.kind = kind
        self.preTokenizer = preTokenizer
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.scores = scores
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.padTokenId = padTokenId
        self.unknownTokenId = unknownTokenId
        self.endOfTurnTokenIds = endOfTurnTokenIds
        self.addBosToken = addBosToken
        self.addSpacePrefix = addSpacePrefix
    }
}
