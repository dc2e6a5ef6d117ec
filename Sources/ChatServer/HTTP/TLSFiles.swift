import Foundation
import NIOSSL

/// A server's TLS configuration from a PEM certificate chain (the server's certificate first, then
/// any intermediates) and a PEM private key. Everything is checked at startup: an unreadable file, a
/// file without a certificate or key, or a key that does not belong to the certificate stops the
/// server with a message naming the file, rather than failing each handshake later.
public enum TLSFiles {
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func serverConfiguration(certificatePath: String, keyPath: String) throws -> TLSConfiguration {
        let certificates = try load("certificate", path: certificatePath) { try NIOSSLCertificate.fromPEMFile($0) }
        guard !certificates.isEmpty else {
            throw LoadError(description: "the certificate file \(certificatePath) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        let key = try load("private key", path: keyPath) { try NIOSSLPrivateKey(file: $0, format: .pem) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificates.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        // The TLS library checks that the key belongs to the certificate when the two are joined.
        do {
            _ = try NIOSSLContext(configuration: configuration)
        } catch {
            throw LoadError(
                description: "the TLS library refused the certificate \(certificatePath) with the key \(keyPath)"
                    + " (does the key belong to the certificate?): \(error)")
        }
        return configuration
    }

    private static func load<T>(_ what: String, path: String, _ read: (String) throws -> T) throws -> T {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw LoadError(description: "cannot read the \(what) file \(path) (missing, or no permission)")
        }
        do {
            return try read(path)
        } catch {
            throw LoadError(description: "the \(what) file \(path) is not a PEM \(what) (\(error))")
        }
    }
}
