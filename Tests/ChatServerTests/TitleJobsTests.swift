import ChatServer
import Foundation
import HummingbirdTesting
import XCTest
@testable import ChatServer

/// Model-written titles through the store's job queue.
final class TitleJobsTests: XCTestCase {
    /// Replies "Sorting names in Swift." to the title request and "Sure." to everything else.
    static let engine = FakeEngine(
        script: .init(reply: { messages in
            messages.first?.content.hasPrefix("You name chats") == true ? ["\"Sorting", " names", " in Swift.\""] : ["Sure."]
        }))

    func testTheFirstReplyQueuesATitleThatTheModelWrites() async throws {
        let f = try await ServerFixture(engine: Self.engine)
        let jobs = TitleJobs(service: f.service, owner: "test")
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"how do I sort names"}"#)
            var ran = try await jobs.runOnce()
            XCTAssertTrue(ran)
            let alice = try await f.store.user(named: "alice")
            let named = try await f.store.conversation(id: id, userId: try XCTUnwrap(alice?.userId))
            XCTAssertEqual(named?.title, "Sorting names in Swift", "the model's answer without quotes and final period")
            ran = try await jobs.runOnce()
            XCTAssertFalse(ran, "the job is done and gone")
            // A second turn queues nothing.
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"and numbers?"}"#)
            ran = try await jobs.runOnce()
            XCTAssertFalse(ran)
        }
    }

    func testATitleTheUserGaveIsKept() async throws {
        let f = try await ServerFixture(engine: Self.engine)
        let jobs = TitleJobs(service: f.service, owner: "test")
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            _ = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"hello"}"#)
            _ = try await client.send(.patch, "/api/conversations/\(id)", key: f.keyA, json: #"{"title":"Mine"}"#)
            let ran = try await jobs.runOnce()
            XCTAssertTrue(ran, "the job is taken and completed")
            let alice = try await f.store.user(named: "alice")
            let kept = try await f.store.conversation(id: id, userId: try XCTUnwrap(alice?.userId))
            XCTAssertEqual(kept?.title, "Mine")
            let again = try await jobs.runOnce()
            XCTAssertFalse(again)
        }
    }

    func testTitlesAreCleaned() {
        XCTAssertEqual(TitleJobs.clean("Title: \"Merge sort in Rust\".\nmore"), "Merge sort in Rust")
        XCTAssertEqual(TitleJobs.clean("\n"), "")
        let long = TitleJobs.clean(String(repeating: "word ", count: 30))
        XCTAssertLessThanOrEqual(long.count, ConversationTitle.maxLength)
        XCTAssertTrue(long.hasPrefix("word word") && long.hasSuffix("…"), long)
    }
}
