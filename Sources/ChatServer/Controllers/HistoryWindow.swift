import Hummingbird

/// Fits a conversation into the model's context: leading system messages are kept, and whole turns
/// (a user message and the replies after it) are dropped oldest first until the prompt plus the room
/// reserved for the reply fits.
struct HistoryWindow {
    struct Fitted: Sendable {
        var messages: [ChatMessage]
        var droppedTurns: Int
        var promptTokens: Int
    }

    static func fit(_ messages: [ChatMessage], engine: any ChatEngine, replyReserve: Int) throws -> Fitted {
        let limit = engine.modelInfo.contextLength
        let system = Array(messages.prefix(while: { $0.role == .system }))
        // Turns: each starts at a user message (a leading reply without a user message is a turn too).
        var turns: [[ChatMessage]] = []
        for message in messages.dropFirst(system.count) {
            if message.role == .user || turns.isEmpty { turns.append([message]) } else { turns[turns.count - 1].append(message) }
        }
        var dropped = 0
        while true {
            let candidate = system + turns[dropped...].flatMap { $0 }
            let tokens = try engine.countTokens(candidate)
            if tokens + replyReserve <= limit {
                return Fitted(messages: candidate, droppedTurns: dropped, promptTokens: tokens)
            }
            if dropped + 1 >= turns.count {
                // Even the last turn alone does not fit: say by how much, and whose fault it is.
                if !system.isEmpty { try checkSystemPrompt(system, engine: engine, replyReserve: replyReserve) }
                throw APIError(
                    status: .badRequest,
                    message:
                        "This model's maximum context length is \(limit) tokens. However, the latest message needs \(tokens) prompt tokens plus \(replyReserve) reserved for the reply. Please shorten the message.",
                    type: "invalid_request_error", param: "content", code: "context_length_exceeded")
            }
            dropped += 1
        }
    }

    /// Refuses system messages that leave no room in the context for a user message and the reply:
    /// every message of such a conversation would fail.
    static func checkSystemPrompt(_ system: [ChatMessage], engine: any ChatEngine, replyReserve: Int) throws {
        let limit = engine.modelInfo.contextLength
        let tokens = try engine.countTokens(system + [ChatMessage(role: .user, content: "")])
        guard tokens + replyReserve >= limit else { return }
        throw APIError(
            status: .badRequest,
            message: "The system prompt is too long for this model: with an empty user message it needs \(tokens) tokens, plus"
                + " \(replyReserve) reserved for the reply, and the model's context holds \(limit). Please shorten the system prompt.",
            type: "invalid_request_error", param: "system_prompt", code: "context_length_exceeded")
    }
}
