import ArgumentParser
import ChatServer
import Foundation
import Logging

/// Where the chat database lives: shared by `serve`, `users` and `keys`, so the account commands
/// reach the database of a running server (SQLite in WAL mode lets them write while it runs;
/// PostgreSQL is shared by every instance).
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Folder for the database and other state (env SARVAM_DATA_DIR; default ./data).")
    var dataDir: String?

    @Option(name: .long, help: "SQLite database file (env SARVAM_DATABASE; default DATA_DIR/sarvam.sqlite).")
    var database: String?

    @Option(
        name: .long,
        help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DB to keep conversations and accounts in PostgreSQL, or sqlite:PATH (env SARVAM_STORE; default: the SQLite file).")
    var store: String?

    var resolvedDataDirectory: String {
        dataDir ?? ProcessInfo.processInfo.environment["SARVAM_DATA_DIR"] ?? "./data"
    }

    var databasePath: String {
        database ?? ProcessInfo.processInfo.environment["SARVAM_DATABASE"]
            ?? ChatDatabase.defaultPath(dataDirectory: resolvedDataDirectory)
    }

    /// `--store` / SARVAM_STORE when set, else the SQLite file (`--database`, in the data folder by default).
    func storeLocation(_ settings: Settings = .process) throws -> StoreLocation {
        guard let text = settings.string(store, "SARVAM_STORE") else { return .sqlite(path: databasePath) }
        if database != nil || settings.raw("SARVAM_DATABASE") != nil {
            throw ValidationError("--store / SARVAM_STORE and --database / SARVAM_DATABASE name the store twice: give one")
        }
        do { return try StoreLocation(parsing: text) } catch { throw ValidationError("--store / SARVAM_STORE: \(error)") }
    }

    /// Opens the store, runs `body` with the accounts, and closes it.
    func withAccounts<T>(_ body: (Accounts) async throws -> T) async throws -> T {
        var logger = Logger(label: "sarvam.accounts", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = .warning
        let store = try await openChatStore(try storeLocation(), logger: logger)
        do {
            let result = try await body(Accounts(store: store))
            try await store.close()
            return result
        } catch {
            try? await store.close()
            throw error
        }
    }
}

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "Manage the chat server's user accounts.",
        subcommands: [Add.self, Password.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a user, with a password to sign in on the page when --password-stdin is given.")
        @OptionGroup var data: DataOptions
        @Argument(help: "The user's name (1 to 64 characters, unique).") var name: String
        @Flag(help: "Read the password (8 to 72 bytes) from the first line of standard input.") var passwordStdin = false

        func run() async throws {
            let password = try passwordStdin ? readPassword() : nil
            let user = try await data.withAccounts { accounts in
                let user = try await accounts.addUser(name: name)
                if let password { _ = try await accounts.setPassword(userName: user.name, password: password) }
                return user
            }
            print("Created user \(user.name) (id \(user.userId))\(password == nil ? "" : " with a password").")
            if password == nil { print("Give them a password with: sarvam users password \(user.name) --password-stdin") }
            print("Create an API key for them with: sarvam keys create \(user.name)")
        }
    }

    struct Password: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set or reset a user's password (ends all their sessions); without --password-stdin a random one is printed once.")
        @OptionGroup var data: DataOptions
        @Argument(help: "The user's name.") var name: String
        @Flag(help: "Read the password (8 to 72 bytes) from the first line of standard input.") var passwordStdin = false

        func run() async throws {
            let password = try passwordStdin ? readPassword() : Accounts.generatePassword()
            let user = try await data.withAccounts { try await $0.setPassword(userName: name, password: password) }
            print("Set the password of \(user.name); their sessions have ended.")
            if !passwordStdin { print("The new password, shown only this once:\n\(password)") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var data: DataOptions

        func run() async throws {
            let users = try await data.withAccounts { try await $0.store.users() }
            for user in users { print("\(user.userId)\t\(user.name)\(user.isAdmin ? "\tadmin" : "")") }
        }
    }
}

/// The first line of standard input, without its line end, checked as a password.
func readPassword() throws -> String {
    guard let line = readLine(strippingNewline: true) else {
        throw ValidationError("--password-stdin: standard input is empty; pipe the password in, e.g. `printf '%s\\n' \"$PW\" | sarvam ...`")
    }
    let password = line.hasSuffix("\r") ? String(line.dropLast()) : line
    do { try Accounts.validatePassword(password) } catch { throw ValidationError("--password-stdin: \(error)") }
    return password
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage API keys.",
        subcommands: [Create.self, Revoke.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an API key for a user. The key is printed once, alone on the last line.")
        @OptionGroup var data: DataOptions
        @Argument(help: "The user's name.") var user: String

        func run() async throws {
            let issued = try await data.withAccounts { try await $0.createKey(userName: user) }
            print("Created key \(issued.record.id) for \(user). Keep it now: it is not stored and cannot be shown again.")
            print(issued.key)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key by its id (key_…); takes effect at once.")
        @OptionGroup var data: DataOptions
        @Argument(help: "The key's id, as `keys create` or `keys list` print it.") var keyId: String

        func run() async throws {
            try await data.withAccounts { try await $0.revokeKey(id: keyId) }
            print("Revoked key \(keyId).")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a user's keys (ids and prefixes; never the keys).")
        @OptionGroup var data: DataOptions
        @Argument(help: "The user's name.") var user: String

        func run() async throws {
            let keys = try await data.withAccounts { accounts -> [APIKeyRecord] in
                guard let found = try await accounts.store.user(named: user) else {
                    throw ValidationError("no user named \(user.debugDescription)")
                }
                return try await accounts.store.keys(userId: found.userId)
            }
            let formatter = ISO8601DateFormatter()
            for key in keys {
                let state = key.revokedAt.map { "revoked \(formatter.string(from: $0))" } ?? "active"
                print("\(key.id)\t\(key.prefix)…\tcreated \(formatter.string(from: key.createdAt))\t\(state)")
            }
        }
    }
}
