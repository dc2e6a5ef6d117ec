import Tokenizer
import XCTest

/// Each family's rendering against hand-written expected strings (from the families' Jinja templates).
final class ChatTemplateTests: XCTestCase {
    let conversation = [
        ChatMessage(role: .system, content: "Be brief."),
        ChatMessage(role: .user, content: "Hi"),
        ChatMessage(role: .assistant, content: "Hello!"),
        ChatMessage(role: .user, content: "2+2?"),
    ]

    func testChatMLWithQwenDefaultSystemPrompt() throws {
        let qwen = ChatTemplate(detectingFrom: Self.qwenTemplate)
        XCTAssertEqual(qwen.family, .chatML)
        XCTAssertEqual(
            qwen.render([ChatMessage(role: .user, content: "Hi")]),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(
            qwen.render(conversation),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                + "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(
            qwen.render([ChatMessage(role: .user, content: "Hi")], addGenerationPrompt: false),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                + "<|im_start|>user\nHi<|im_end|>\n")
    }

    func testPlainChatMLHasNoDefaultSystemPrompt() {
        let template = ChatTemplate(detectingFrom: "{% for m in messages %}<|im_start|>{{ m.role }}...{% endfor %}")
        XCTAssertEqual(template, ChatTemplate(family: .chatML))
        XCTAssertEqual(
            template.render([ChatMessage(role: .user, content: "Hi")]), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        // No template at all: ChatML without a default system prompt.
        XCTAssertEqual(ChatTemplate(detectingFrom: nil), ChatTemplate(family: .chatML))
    }

    func testLlama3() {
        let template = ChatTemplate(detectingFrom: "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}")
        XCTAssertEqual(template.family, .llama3)
        XCTAssertEqual(
            template.render(conversation),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                + "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\n")
    }

    func testLlama2() {
        let template = ChatTemplate(detectingFrom: "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }} <<SYS>>")
        XCTAssertEqual(template.family, .llama2)
        XCTAssertEqual(
            template.render(conversation),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]")
        XCTAssertEqual(template.render([ChatMessage(role: .user, content: " Hi ")]), "<s>[INST] Hi [/INST]")
    }

    func testGemma() {
        let template = ChatTemplate(detectingFrom: "{{ '<start_of_turn>' + role + '\\n' }}")
        XCTAssertEqual(template.family, .gemma)
        XCTAssertEqual(
            template.render(conversation),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
                + "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n")
    }

    func testPhi3() {
        let template = ChatTemplate(detectingFrom: "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}")
        XCTAssertEqual(template.family, .phi3)
        XCTAssertEqual(
            template.render(conversation),
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n")
    }

    func testOverrideAndEndOfTurnTokens() {
        let qwenText = "<|im_start|> You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        XCTAssertEqual(ChatTemplate(detectingFrom: qwenText, override: .phi3).family, .phi3)
        XCTAssertNil(ChatTemplate(detectingFrom: qwenText, override: .phi3).defaultSystemPrompt)
        XCTAssertEqual(ChatTemplateFamily.chatML.endOfTurnTokens, ["<|im_end|>", "<|endoftext|>"])
        XCTAssertEqual(ChatTemplateFamily.llama3.endOfTurnTokens.first, "<|eot_id|>")
        XCTAssertEqual(ChatTemplateFamily.gemma.endOfTurnTokens.first, "<end_of_turn>")
        XCTAssertEqual(ChatTemplateFamily.phi3.endOfTurnTokens.first, "<|end|>")
        XCTAssertEqual(ChatTemplateFamily.llama2.endOfTurnTokens, ["</s>"])
    }

    func testRenderedQwenPromptTokens() throws {
        // The frame tokens come out as single special ids.
        let tokenizer = try defaultTokenizer()
        let prompt = ChatTemplate(family: .chatML).render([ChatMessage(role: .user, content: "Hi")])
        let expected = [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]
        XCTAssertEqual(tokenizer.encodeTrusted(template: prompt), expected)
        XCTAssertEqual(
            tokenizer.encode(prompt: ChatTemplate(family: .chatML).renderPrompt([ChatMessage(role: .user, content: "Hi")])), expected)
    }

    /// `tokenizer.chat_template` of the default model's GGUF (qwen2.5-coder-0.5b-instruct-q4_k_m.gguf).
    static let qwenTemplate = #"""
        {%- if tools %}
            {{- '<|im_start|>system\n' }}
            {%- if messages[0]['role'] == 'system' %}
                {{- messages[0]['content'] }}
            {%- else %}
                {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
            {%- endif %}
            {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
            {%- for tool in tools %}
                {{- "\n" }}
                {{- tool | tojson }}
            {%- endfor %}
            {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
        {%- else %}
            {%- if messages[0]['role'] == 'system' %}
                {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
            {%- else %}
                {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
            {%- endif %}
        {%- endif %}
        {%- for message in messages %}
            {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
                {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
            {%- elif message.role == "assistant" %}
                {{- '<|im_start|>' + message.role }}
                {%- if message.content %}
                    {{- '\n' + message.content }}
                {%- endif %}
                {%- for tool_call in message.tool_calls %}
                    {%- if tool_call.function is defined %}
                        {%- set tool_call = tool_call.function %}
                    {%- endif %}
                    {{- '\n<tool_call>\n{"name": "' }}
                    {{- tool_call.name }}
                    {{- '", "arguments": ' }}
                    {{- tool_call.arguments | tojson }}
                    {{- '}\n</tool_call>' }}
                {%- endfor %}
                {{- '<|im_end|>\n' }}
            {%- elif message.role == "tool" %}
                {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
                    {{- '<|im_start|>user' }}
                {%- endif %}
                {{- '\n<tool_response>\n' }}
                {{- message.content }}
                {{- '\n</tool_response>' }}
                {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
                    {{- '<|im_end|>\n' }}
                {%- endif %}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
        {%- endif %}

        """#
}
