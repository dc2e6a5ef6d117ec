import Foundation
import Logging

/// Titles written by the model, through the store's job queue: after a conversation's first reply
/// the server queues a `title` job; any instance with spare capacity (few replies running) leases
/// it, asks the default (lightest) model for a short title and renames the conversation, unless its
/// user renamed it meanwhile. A job whose instance dies is leased again when its lease runs out.
struct TitleJobs: Sendable {
    static let kind = "title"
    let service: ChatService
    /// This instance, for the job's lease.
    let owner: String
    var leaseSeconds = 60.0
    var maxAttempts = 3
    /// Replies running here at most for this instance to take a job.
    var maxRunningReplies = 2

    static func payload(userId: Int64, conversationId: String) -> String { "\(userId) \(conversationId)" }

    /// Queues the title of a conversation whose first reply just finished.
    static func enqueue(store: any ChatStore, userId: Int64, conversationId: String) async throws {
        _ = try await store.enqueueJob(kind: kind, payload: payload(userId: userId, conversationId: conversationId))
    }

    /// Leases and does one job; false when there is none or no spare capacity.
    func runOnce() async throws -> Bool {
        guard case .ready = service.catalog.state, await service.registry.runningCount <= maxRunningReplies else { return false }
        let store = service.store
        guard let job = try await store.claimJob(kinds: [Self.kind], owner: owner, leaseSeconds: leaseSeconds, maxAttempts: maxAttempts)
        else { return false }
        let parts = job.payload.split(separator: " ", maxSplits: 1).map(String.init)
        guard parts.count == 2, let userId = Int64(parts[0]),
            let conversation = try await store.conversation(id: parts[1], userId: userId),
            let first = try await store.messages(conversationId: conversation.id).first(where: { $0.role == .user }),
            conversation.title == ConversationTitle.from(firstMessage: first.content)  // not renamed by its user
        else {
            try await store.completeJob(id: job.id)
            return true
        }
        let engine = try service.catalog.engine(named: nil)
        let request = GenerationRequest(
            messages: [
                ChatMessage(role: .system, content: "You name chats. Answer with a title of two to six words and nothing else."),
                ChatMessage(role: .user, content: "Name the chat that starts with this message:\n\n" + first.content.prefix(1500)),
            ],
            maxTokens: 16, sampling: SamplingParameters(temperature: 0), userId: userId, requestId: "title-\(job.id)")
        var text = ""
        for try await event in engine.generate(request) {
            if case .text(let piece, _) = event { text += piece }
        }
        let title = Self.clean(text)
        if !title.isEmpty { _ = try await store.renameConversation(id: conversation.id, userId: userId, title: title) }
        try await store.completeJob(id: job.id)
        return true
    }

    /// The model's answer as a title: its first line, without quotes, a "Title:" label or a final
    /// period, at most `ConversationTitle.maxLength` characters.
    static func clean(_ text: String) -> String {
        var line = String(text.split(whereSeparator: \.isNewline).first ?? "").trimmingCharacters(in: .whitespaces)
        if line.lowercased().hasPrefix("title:") { line = String(line.dropFirst(6)).trimmingCharacters(in: .whitespaces) }
        line = line.trimmingCharacters(in: CharacterSet(charactersIn: "\"'`*#“”‘’ ."))
        let title = ConversationTitle.from(firstMessage: line)
        return title == ConversationTitle.placeholder ? "" : title
    }

    /// Takes jobs every `interval` until cancelled; errors are logged and the loop goes on.
    func run(every interval: Duration, logger: Logger) async {
        while !Task.isCancelled {
            do {
                while try await runOnce() {}
            } catch {
                logger.warning("title job failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}

extension ChatService {
    /// Takes background jobs (conversation titles) from the store's queue until cancelled.
    public func runBackgroundJobs(every interval: Duration = .seconds(2)) async {
        let owner = "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
        await TitleJobs(service: self, owner: owner).run(every: interval, logger: logger)
    }
}
