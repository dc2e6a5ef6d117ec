import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// The admin accounts API: the admin key creates users and keys that work at once; nobody else may.
final class AdminTests: XCTestCase {
    func testTheAdminCreatesAUserWhoseKeyWorksAtOnce() async throws {
        let f = try await ServerFixture()
        let admin = try await Accounts(store: f.store).bootstrapAdmin(presetKey: nil)!.key
        try await f.test { client in
            let created = try await client.send(.post, "/api/admin/users", key: admin, json: #"{"name":"carol"}"#)
            XCTAssertEqual(created.status, .created, String(buffer: created.body))
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(buffer: created.body)) as? [String: Any])
            let key = try XCTUnwrap(json["key"] as? String)
            XCTAssertTrue(key.hasPrefix(Accounts.keyPrefix))
            XCTAssertEqual((json["user"] as? [String: Any])?["name"] as? String, "carol")

            let me = try await client.send(.get, "/api/me", key: key)
            XCTAssertEqual(me.status, .ok)
            XCTAssertTrue(String(buffer: me.body).contains(#""name":"carol""#), String(buffer: me.body))

            let second = try await client.send(.post, "/api/admin/users/carol/keys", key: admin)
            XCTAssertEqual(second.status, .created)
            let secondJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(buffer: second.body)) as? [String: Any])
            let keyId = try XCTUnwrap(secondJSON["key_id"] as? String)
            let secondKey = try XCTUnwrap(secondJSON["key"] as? String)
            let r1 = try await client.send(.delete, "/api/admin/keys/\(keyId)", key: admin)
            XCTAssertEqual(r1.status, .ok)
            let r2 = try await client.send(.get, "/api/me", key: secondKey)
            XCTAssertEqual(r2.status, .unauthorized, "a revoked key stops working")
            let r3 = try await client.send(.get, "/api/me", key: key)
            XCTAssertEqual(r3.status, .ok, "the other key still works")

            let list = try await client.send(.get, "/api/admin/users", key: admin)
            XCTAssertTrue(String(buffer: list.body).contains(#""carol""#))
        }
    }

    func testOnlyTheAdminMayManageAccountsAndBadNamesAreRefused() async throws {
        let f = try await ServerFixture()
        let admin = try await Accounts(store: f.store).bootstrapAdmin(presetKey: nil)!.key
        try await f.test { client in
            for (method, path) in [(HTTPRequest.Method.get, "/api/admin/users"), (.post, "/api/admin/users/alice/keys")] {
                let response = try await client.send(method, path, key: f.keyA)
                XCTAssertEqual(response.status, .forbidden, path)
                XCTAssertTrue(String(buffer: response.body).contains("permission_denied"))
            }
            let r4 = try await client.send(.post, "/api/admin/users", key: f.keyA, json: #"{"name":"eve"}"#)
            XCTAssertEqual(r4.status, .forbidden)
            let r5 = try await client.send(.get, "/api/admin/users", key: nil)
            XCTAssertEqual(r5.status, .unauthorized)
            let r6 = try await client.send(.post, "/api/admin/users", key: admin, json: #"{"name":"alice"}"#)
            XCTAssertEqual(r6.status, .conflict)
            let r7 = try await client.send(.post, "/api/admin/users", key: admin, json: #"{"name":"  "}"#)
            XCTAssertEqual(r7.status, .badRequest)
            let r8 = try await client.send(.post, "/api/admin/users", key: admin, json: #"{"nom":"x"}"#)
            XCTAssertEqual(r8.status, .badRequest)
            let r9 = try await client.send(.post, "/api/admin/users/nobody/keys", key: admin)
            XCTAssertEqual(r9.status, .notFound)
            let r10 = try await client.send(.delete, "/api/admin/keys/key_000000000000", key: admin)
            XCTAssertEqual(r10.status, .notFound)
        }
    }
}
