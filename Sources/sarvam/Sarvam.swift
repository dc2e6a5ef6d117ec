// The `sarvam` command line: wiring only. Each subcommand lives in its own file.
import ArgumentParser

@main
struct Sarvam: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sarvam",
        abstract: "Sarvam: an offline LLM chat appliance.",
        subcommands: [
            ServeCommand.self, ChatCommand.self, GenerateCommand.self, PerplexityCommand.self,
            InfoCommand.self, ConvertCommand.self, TokenizeCommand.self, DetokenizeCommand.self,
            UsersCommand.self, KeysCommand.self,
        ])
}
