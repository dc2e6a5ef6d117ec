/// One turn of a conversation.
public struct ChatMessage: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable { case system, user, assistant }
    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }
}

/// The prompt formats we render, each a fixed rendering of the family's Jinja template (we do not
/// run Jinja: these few formats cover the models we import, and the output is testable by eye).
public enum ChatTemplateFamily: String, Codable, Sendable, CaseIterable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (Qwen, and the default).
    case chatML = "chatml"
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`.
    case llama3
    /// `<s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>` (Llama-2, Mistral).
    case llama2
    /// `<start_of_turn>user\ncontent<end_of_turn>\n`, assistant is `model`.
    case gemma
    /// `<|user|>\ncontent<|end|>\n`.
    case phi3

    /// Token strings that end an assistant turn in this format; the generator stops on them.
    public var endOfTurnTokens: [String] {
        switch self {
        case .chatML: return ["<|im_end|>", "<|endoftext|>"]
        case .llama3: return ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"]
        case .llama2: return ["</s>"]
        case .gemma: return ["<end_of_turn>", "<eos>"]
        case .phi3: return ["<|end|>", "<|endoftext|>"]
        }
    }

    /// The family whose markers appear in an imported Jinja template, or nil if none does.
    public init?(detectingFrom template: String) {
        if template.contains("<|im_start|>") {
            self = .chatML
        } else if template.contains("<|start_header_id|>") {
            self = .llama3
        } else if template.contains("<start_of_turn>") {
            self = .gemma
        } else if template.contains("<|assistant|>") || template.contains("<|user|>") {
            self = .phi3
        } else if template.contains("[INST]") {
            self = .llama2
        } else {
            return nil
        }
    }
}

/// A rendered prompt that remembers which text the template wrote (where special tokens such as
/// `<|im_start|>` are meant) and which came from the conversation (where they must stay plain text,
/// whoever typed them). `Tokenizer.encode(prompt:)` encodes it as one text, recognizing special
/// tokens only inside template parts: the same ids as the reference tokenizers give for honest
/// content, and no forged turns for hostile content.
public struct RenderedPrompt: Sendable, Equatable {
    public struct Part: Sendable, Equatable {
        public var text: String
        /// Written by the template (special tokens recognized) rather than taken from a message.
        public var isTemplate: Bool

        public init(text: String, isTemplate: Bool) {
            self.text = text
            self.isTemplate = isTemplate
        }
    }

    public var parts: [Part] = []

    public init(parts: [Part] = []) { self.parts = parts }

    /// The prompt as one string (for display and logs; encode with `Tokenizer.encode(prompt:)`).
    public var text: String { parts.map(\.text).joined() }

    mutating func template(_ text: String) { parts.append(Part(text: text, isTemplate: true)) }
    mutating func content(_ text: String) { parts.append(Part(text: text, isTemplate: false)) }
}

/// Renders a conversation into a model's prompt.
public struct ChatTemplate: Sendable, Equatable {
    /// Qwen's template adds this system turn when the conversation has none.
    public static let qwenDefaultSystemPrompt = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

    public var family: ChatTemplateFamily
    /// System prompt used when the conversation has no system turn (nil: none).
    public var defaultSystemPrompt: String?

    public init(family: ChatTemplateFamily, defaultSystemPrompt: String? = nil) {
        self.family = family
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// The template for an imported Jinja template string: the family from its markers (ChatML when
    /// there is no template or no known marker) unless `override` names one; the Qwen default system
    /// prompt only when the template itself contains that sentence.
    public init(detectingFrom template: String?, override: ChatTemplateFamily? = nil) {
        let detected = template.flatMap(ChatTemplateFamily.init(detectingFrom:))
        family = override ?? detected ?? .chatML
        let isQwen = template?.contains(Self.qwenDefaultSystemPrompt) ?? false
        defaultSystemPrompt = family == .chatML && isQwen ? Self.qwenDefaultSystemPrompt : nil
    }

    /// The prompt text for `messages`, ending with the opening of an assistant turn when
    /// `addGenerationPrompt` (the formats without such an opening, `[INST]`, end at `[/INST]`).
    /// Encode prompts with `Tokenizer.encode(prompt: renderPrompt(...))`, not this string.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        renderPrompt(messages, addGenerationPrompt: addGenerationPrompt).text
    }

    /// The prompt for `messages` with template text and message contents kept apart.
    public func renderPrompt(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> RenderedPrompt {
        var messages = messages
        if messages.first?.role != .system, let defaultSystemPrompt {
            messages.insert(ChatMessage(role: .system, content: defaultSystemPrompt), at: 0)
        }
        var p = RenderedPrompt()
        switch family {
        case .chatML: renderChatML(messages, addGenerationPrompt, &p)
        case .llama3: renderLlama3(messages, addGenerationPrompt, &p)
        case .llama2: renderLlama2(messages, &p)
        case .gemma: renderGemma(messages, addGenerationPrompt, &p)
        case .phi3: renderPhi3(messages, addGenerationPrompt, &p)
        }
        return p
    }

    private func renderChatML(_ messages: [ChatMessage], _ generation: Bool, _ p: inout RenderedPrompt) {
        for m in messages {
            p.template("<|im_start|>\(m.role.rawValue)\n")
            p.content(m.content)
            p.template("<|im_end|>\n")
        }
        if generation { p.template("<|im_start|>assistant\n") }
    }

    /// Meta's Llama-3 template: BOS, then headers; contents are trimmed.
    private func renderLlama3(_ messages: [ChatMessage], _ generation: Bool, _ p: inout RenderedPrompt) {
        p.template("<|begin_of_text|>")
        for m in messages {
            p.template("<|start_header_id|>\(m.role.rawValue)<|end_header_id|>\n\n")
            p.content(trimmed(m.content))
            p.template("<|eot_id|>")
        }
        if generation { p.template("<|start_header_id|>assistant<|end_header_id|>\n\n") }
    }

    /// Meta's Llama-2 chat template: the system prompt goes inside the first user turn; each user turn
    /// opens with BOS; each assistant turn is followed by EOS. A later system turn is folded into the
    /// next user turn the same way.
    private func renderLlama2(_ messages: [ChatMessage], _ p: inout RenderedPrompt) {
        var system: String?
        for m in messages {
            switch m.role {
            case .system:
                system = m.content
            case .user:
                p.template("<s>[INST] ")
                if let prompt = system {
                    p.template("<<SYS>>\n")
                    p.content(prompt)
                    p.template("\n<</SYS>>\n\n")
                    system = nil
                }
                p.content(trimmed(m.content))
                p.template(" [/INST]")
            case .assistant:
                p.template(" ")
                p.content(trimmed(m.content))
                p.template(" </s>")
            }
        }
    }

    /// Google's Gemma template: no system role; a system prompt is put before the first user turn's
    /// text with a blank line (as Gemma 3's template does). The assistant is called `model`.
    private func renderGemma(_ messages: [ChatMessage], _ generation: Bool, _ p: inout RenderedPrompt) {
        p.template("<bos>")
        var system: String?
        for m in messages {
            switch m.role {
            case .system:
                system = m.content
            case .user:
                p.template("<start_of_turn>user\n")
                if let prompt = system {
                    p.content(prompt + "\n\n")
                    system = nil
                }
                p.content(trimmed(m.content))
                p.template("<end_of_turn>\n")
            case .assistant:
                p.template("<start_of_turn>model\n")
                p.content(trimmed(m.content))
                p.template("<end_of_turn>\n")
            }
        }
        if generation { p.template("<start_of_turn>model\n") }
    }

    private func renderPhi3(_ messages: [ChatMessage], _ generation: Bool, _ p: inout RenderedPrompt) {
        for m in messages {
            p.template("<|\(m.role.rawValue)|>\n")
            p.content(m.content)
            p.template("<|end|>\n")
        }
        if generation { p.template("<|assistant|>\n") }
    }

    /// Jinja's `trim`: leading and trailing whitespace removed.
    private func trimmed(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[start...end])
    }
}
