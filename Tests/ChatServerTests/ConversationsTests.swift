import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest
import ChatServer

func create(_ client: any TestClientProtocol, key: String, json: String = "{}") async throws -> String {
    let r = try await client.send(.post, "/api/conversations", key: key, json: json)
    XCTAssertEqual(r.status, .created, r.text)
    return try XCTUnwrap(r.object["id"] as? String)
}

final class ConversationsTests: XCTestCase {
    func testCreateListGetRenameDelete() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            var ids: [String] = []
            for _ in 0..<3 { ids.append(try await create(client, key: f.keyA)) }
            let list = try await client.send(.get, "/api/conversations", key: f.keyA)
            XCTAssertEqual(list.status, .ok)
            XCTAssertEqual((list.object["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }, ids.reversed(), "newest first")
            XCTAssertEqual(list.object["total"] as? Int, 3)
            let page1 = try await client.send(.get, "/api/conversations?limit=2", key: f.keyA)
            XCTAssertEqual((page1.object["data"] as? [Any])?.count, 2)
            XCTAssertEqual(page1.object["has_more"] as? Bool, true)
            let page2 = try await client.send(.get, "/api/conversations?limit=2&offset=2", key: f.keyA)
            XCTAssertEqual((page2.object["data"] as? [[String: Any]])?.first?["id"] as? String, ids[0])
            XCTAssertEqual(page2.object["has_more"] as? Bool, false)
            let bad = try await client.send(.get, "/api/conversations?limit=0", key: f.keyA)
            XCTAssertEqual(bad.status, .badRequest)
            XCTAssertEqual(bad.error["param"] as? String, "limit")

            let got = try await client.send(.get, "/api/conversations/\(ids[1])", key: f.keyA)
            XCTAssertEqual(got.status, .ok)
            XCTAssertEqual(got.object["title"] as? String, ConversationTitle.placeholder)
            XCTAssertEqual((got.object["messages"] as? [Any])?.count, 0)
            XCTAssertEqual(got.object["model"] as? String, "fake-model")

            let renamed = try await client.send(.patch, "/api/conversations/\(ids[1])", key: f.keyA, json: #"{"title":"Trip plans"}"#)
            XCTAssertEqual(renamed.object["title"] as? String, "Trip plans")
            let empty = try await client.send(.patch, "/api/conversations/\(ids[1])", key: f.keyA, json: #"{"title":"  "}"#)
            XCTAssertEqual(empty.status, .badRequest)

            XCTAssertEqual(f.engine.forgotten, [])
            let deleted = try await client.send(.delete, "/api/conversations/\(ids[1])", key: f.keyA)
            XCTAssertEqual(deleted.object["deleted"] as? Bool, true)
            // The engine forgets what it keeps of the conversation (its KV snapshots).
            XCTAssertEqual(f.engine.forgotten.count, 1)
            XCTAssertTrue(f.engine.forgotten.first?.hasSuffix("/\(ids[1])") == true, "\(f.engine.forgotten)")
            let awaited13 = try await client.send(.get, "/api/conversations/\(ids[1])", key: f.keyA).status
            XCTAssertEqual(awaited13, .notFound)
            let awaited14 = try await client.send(.get, "/api/conversations", key: f.keyA).object["total"] as? Int
            XCTAssertEqual(awaited14, 2)
        }
    }

    func testPostMessageStreamsAndStoresBoth() async throws {
        let f = try await ServerFixture(engine: FakeEngine(script: .init(promptDelay: .milliseconds(120))))
        try await f.test { client in
            let id = try await create(client, key: f.keyA, json: #"{"system_prompt":"You are terse."}"#)
            let r = try await client.send(
                .post, "/api/conversations/\(id)/messages", key: f.keyA,
                json: #"{"content":"Plan a   trip\nto the mountains for the whole family next summer please"}"#)
            XCTAssertEqual(r.status, .ok)
            XCTAssertEqual(r.headers[.contentType], "text/event-stream")
            let frames = parseSSE(r.text)
            let events = frames.compactMap(\.event)
            XCTAssertEqual(events.first, "user_message")
            XCTAssertEqual(events.last, "done")
            XCTAssertEqual(events.filter { $0 == "start" }.count, 1)
            XCTAssertGreaterThan(events.filter { $0 == "delta" }.count, 3)
            let startIndex = try XCTUnwrap(frames.firstIndex { $0.event == "start" })
            XCTAssertTrue(frames[1..<startIndex].contains { $0.comment == "ping" }, "pings while the prompt is processed")
            let text = frames.filter { $0.event == "delta" }.compactMap { $0.json["content"] as? String }.joined()
            let expected = "You said: Plan a   trip\nto the mountains for the whole family next summer please"
            XCTAssertEqual(text, expected)
            XCTAssertEqual(f.engine.requests.last?.conversationId, id, "the engine knows the conversation (its KV snapshots go with it)")
            let done = try XCTUnwrap(frames.last?.json)
            XCTAssertEqual(done["finish_reason"] as? String, "stop")
            XCTAssertEqual((done["message"] as? [String: Any])?["status"] as? String, "complete")

            let got = try await client.send(.get, "/api/conversations/\(id)", key: f.keyA)
            let messages = try XCTUnwrap(got.object["messages"] as? [[String: Any]])
            XCTAssertEqual(messages.map { $0["role"] as? String }, ["system", "user", "assistant"])
            XCTAssertEqual(messages[2]["content"] as? String, expected)
            XCTAssertEqual(messages[2]["status"] as? String, "complete")
            XCTAssertEqual(messages[2]["token_count"] as? Int, FakeEngine.pieces(of: expected).count)
            XCTAssertNotNil(messages[2]["prompt_tokens"] as? Int)
            XCTAssertEqual(messages[2]["dropped_turns"] as? Int, 0)
            XCTAssertEqual(got.object["title"] as? String, "Plan a trip to the mountains for the whole…")
        }
    }

    func testSecondTurnSendsHistory() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let id = try await create(client, key: f.keyA, json: #"{"system_prompt":"sys"}"#)
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"My name is Ada."}"#)
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"What is my name?"}"#)
            let sent = try XCTUnwrap(f.engine.requests.last).messages
            XCTAssertEqual(
                sent,
                [
                    ChatMessage(role: .system, content: "sys"), ChatMessage(role: .user, content: "My name is Ada."),
                    ChatMessage(role: .assistant, content: "You said: My name is Ada."),
                    ChatMessage(role: .user, content: "What is my name?"),
                ])
        }
    }

    func testOldestTurnsDroppedToFitContext() async throws {
        // Each turn: user 40 chars (4 + 10 tokens) + reply (4 + ceil(50/4) = 17): ~31 tokens. Context 100,
        // reserve 16: system (4 + 1) + 2 header leave room for 2 turns.
        let f = try await ServerFixture(engine: FakeEngine(contextLength: 100))
        try await f.test { client in
            let id = try await create(client, key: f.keyA, json: #"{"system_prompt":"sys"}"#)
            var lastDropped = 0
            for i in 0..<5 {
                let content = "turn \(i) " + String(repeating: "x", count: 33)
                let r = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"\#(content)"}"#)
                XCTAssertEqual(r.status, .ok, r.text)
                let start = try XCTUnwrap(parseSSE(r.text).first { $0.event == "start" }).json
                lastDropped = try XCTUnwrap(start["dropped_turns"] as? Int)
                let sent = try XCTUnwrap(f.engine.requests.last).messages
                XCTAssertEqual(sent.first, ChatMessage(role: .system, content: "sys"), "the system prompt is kept")
                XCTAssertEqual(sent.last?.content, content)
                XCTAssertLessThanOrEqual(try f.engine.countTokens(sent) + 16, 100)
            }
            XCTAssertGreaterThan(lastDropped, 0)
            let awaited15 = try await client.send(.get, "/api/conversations/\(id)", key: f.keyA).object["messages"] as? [[String: Any]]
            let messages = try XCTUnwrap(awaited15)
            XCTAssertEqual(messages.last?["dropped_turns"] as? Int, lastDropped)
            XCTAssertEqual(messages.count, 11, "all turns stay stored")
        }
    }

    func testMessageTooLongForContextStoresNothing() async throws {
        let f = try await ServerFixture(engine: FakeEngine(contextLength: 64))
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let r = try await client.send(
                .post, "/api/conversations/\(id)/messages", key: f.keyA,
                json: #"{"content":"\#(String(repeating: "word ", count: 60))"}"#)
            XCTAssertEqual(r.status, .badRequest)
            XCTAssertEqual(r.error["code"] as? String, "context_length_exceeded")
            let awaited16 = try await f.store.messages(conversationId: id).count
            XCTAssertEqual(awaited16, 0)
            let missing = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":""}"#)
            XCTAssertEqual(missing.error["param"] as? String, "content")
        }
    }

    func testRegenerateReplacesTheLastReply() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"hello"}"#)
            let before = try await f.store.messages(conversationId: id)
            let r = try await client.send(.post, "/api/conversations/\(id)/regenerate", key: f.keyA)
            XCTAssertEqual(r.status, .ok)
            let events = parseSSE(r.text).compactMap(\.event)
            XCTAssertFalse(events.contains("user_message"))
            XCTAssertEqual(events.last, "done")
            let after = try await f.store.messages(conversationId: id)
            XCTAssertEqual(after.map(\.role), [.user, .assistant])
            XCTAssertNotEqual(after[1].id, before[1].id)
            XCTAssertEqual(after[1].content, "You said: hello")
            XCTAssertEqual(f.engine.requests.last?.messages, [ChatMessage(role: .user, content: "hello")])
        }
    }

    func testStopMarksTheReplyStopped() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(60)))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let long = (0..<40).map { "w\($0)" }.joined(separator: " ")
            let running = Task {
                try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"\#(long)"}"#)
            }
            try await eventually("some text streamed") { engine.piecesEmitted >= 3 }
            let conflict = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"again"}"#)
            XCTAssertEqual(conflict.status, .conflict)
            let stop = try await client.send(.post, "/api/conversations/\(id)/stop", key: f.keyA)
            XCTAssertEqual(stop.object["stopped"] as? Bool, true)
            let r = try await running.value
            let done = try XCTUnwrap(parseSSE(r.text).last)
            XCTAssertEqual(done.event, "done")
            XCTAssertEqual(done.json["interrupted"] as? Bool, true)
            let awaited17 = try await f.store.messages(conversationId: id).last
            let reply = try XCTUnwrap(awaited17)
            XCTAssertEqual(reply.role, .assistant)
            XCTAssertEqual(reply.status, .stopped, "stopped by its user, not cut off")
            XCTAssertEqual(done.json["message"].flatMap { ($0 as? [String: Any])?["status"] as? String }, "stopped")
            XCTAssertFalse(reply.content.isEmpty)
            XCTAssertTrue(("You said: " + long).hasPrefix(reply.content), reply.content)
            XCTAssertLessThan(reply.content.count, ("You said: " + long).count)
            try await eventually("engine stopped") { engine.activeGenerations == 0 }
            let notRunning = try await client.send(.post, "/api/conversations/\(id)/stop", key: f.keyA)
            XCTAssertEqual(notRunning.object["stopped"] as? Bool, false)
        }
    }

    func testClientDisconnectStoresInterruptedPartialReply() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(60)))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let long = (0..<40).map { "w\($0)" }.joined(separator: " ")
            // The request's task is cancelled mid-stream, as when the connection goes away.
            let running = Task {
                try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"\#(long)"}"#)
            }
            try await eventually("some text streamed") { engine.piecesEmitted >= 3 }
            running.cancel()
            _ = try? await running.value
            // The reply's row exists from the start; its final write is done when the slot is released.
            try await eventually("reply stored") { await f.service.registry.runningCount == 0 }
            let messages = try await f.store.messages(conversationId: id)
            XCTAssertEqual(messages.map(\.role), [.user, .assistant], "the user message was committed before generation")
            let reply = messages[1]
            XCTAssertEqual(reply.status, .interrupted)
            XCTAssertFalse(reply.content.isEmpty)
            XCTAssertTrue(("You said: " + long).hasPrefix(reply.content), reply.content)
            try await eventually("engine stopped") { engine.activeGenerations == 0 }
            XCTAssertLessThan(engine.piecesEmitted, 20, "generation stopped early")
            try await eventually("slot released") { await f.service.registry.runningCount == 0 }
        }
    }

    /// The reply's row is there, `interrupted`, from before the first token; its text follows the
    /// stream at each flush; its final status is written at the end.
    func testReplyIsFlushedWhileItStreams() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(40)))
        var configuration = ServerFixture.fastConfiguration
        configuration.replyFlushInterval = .milliseconds(100)
        let f = try await ServerFixture(engine: engine, configuration: configuration)
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let long = (0..<40).map { "w\($0)" }.joined(separator: " ")
            let running = Task {
                try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"\#(long)"}"#)
            }
            try await eventually("the user message and the reply's row") {
                try await f.store.messages(conversationId: id).map(\.role) == [.user, .assistant]
            }
            // While it streams: more and more text, still interrupted (what a crash would leave).
            var seen: [Int] = []
            for _ in 0..<3 {
                let previous = seen.last ?? 0
                try await eventually("a flush with more text") {
                    let reply = try await f.store.messages(conversationId: id)[1]
                    XCTAssertEqual(reply.status, .interrupted)
                    return reply.content.count > previous
                }
                let reply = try await f.store.messages(conversationId: id)[1]
                XCTAssertTrue(("You said: " + long).hasPrefix(reply.content), reply.content)
                seen.append(reply.content.count)
            }
            XCTAssertLessThan(seen.last ?? 0, ("You said: " + long).count, "flushed before the end: \(seen)")
            let r = try await running.value
            let done = try XCTUnwrap(parseSSE(r.text).last)
            XCTAssertEqual(done.event, "done")
            let stored = try await f.store.messages(conversationId: id)
            XCTAssertEqual(stored.count, 2, "flushes update the row, they add none")
            XCTAssertEqual(stored[1].status, .complete)
            XCTAssertEqual(stored[1].content, "You said: " + long)
            XCTAssertEqual(stored[1].finishReason, "stop")
            XCTAssertEqual(done.json["message"].flatMap { ($0 as? [String: Any])?["id"] as? Int }, stored[1].id.map { Int($0) })
            let got = try await client.send(.get, "/api/conversations/\(id)", key: f.keyA)
            let statuses = (got.object["messages"] as? [[String: Any]])?.compactMap { $0["status"] as? String }
            XCTAssertEqual(statuses, ["complete", "complete"])
        }
    }

    func testShutdownDrainInterruptsRunningReplies() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(60)))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let running = Task {
                try await client.send(
                    .post, "/api/conversations/\(id)/messages", key: f.keyA,
                    json: #"{"content":"\#((0..<40).map { "w\($0)" }.joined(separator: " "))"}"#)
            }
            try await eventually("some text streamed") { engine.piecesEmitted >= 2 }
            let cancelled = await f.service.registry.drain(timeout: .milliseconds(100))
            XCTAssertEqual(cancelled, 1)
            _ = try await running.value
            let awaited18 = try await f.store.messages(conversationId: id).last?.status
            XCTAssertEqual(awaited18, .interrupted)
            let refused = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"x"}"#)
            XCTAssertEqual(refused.status, .serviceUnavailable)
            let awaited19 = try await client.send(.get, "/health", key: nil).status
            XCTAssertEqual(awaited19, .serviceUnavailable)
        }
    }
}

final class CrossUserIsolationTests: XCTestCase {
    func testOtherUsersConversationIsNotFound() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let created = try await client.send(.post, "/api/conversations", key: f.keyA, json: "{}")
            let id = try XCTUnwrap(created.object["id"] as? String)
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"secret"}"#)

            let attempts: [(HTTPRequest.Method, String, String?)] = [
                (.get, "/api/conversations/\(id)", nil),
                (.patch, "/api/conversations/\(id)", #"{"title":"mine now"}"#),
                (.delete, "/api/conversations/\(id)", nil),
                (.post, "/api/conversations/\(id)/messages", #"{"content":"hi"}"#),
                (.post, "/api/conversations/\(id)/regenerate", nil),
                (.post, "/api/conversations/\(id)/stop", nil),
            ]
            for (method, path, body) in attempts {
                let r = try await client.send(method, path, key: f.keyB, json: body)
                XCTAssertEqual(r.status, .notFound, "\(method) \(path): \(r.text)")
                XCTAssertEqual(r.error["code"] as? String, "conversation_not_found")
            }
            let awaited20 = try await client.send(.get, "/api/conversations", key: f.keyB).object["total"] as? Int
            XCTAssertEqual(awaited20, 0)
            let mine = try await client.send(.get, "/api/conversations/\(id)", key: f.keyA)
            XCTAssertEqual(mine.status, .ok)
            XCTAssertEqual(mine.object["title"] as? String, "secret")
            XCTAssertEqual((mine.object["messages"] as? [Any])?.count, 2)
        }
    }
}
