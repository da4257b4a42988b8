/* C ABI of the Rust chat-template renderer (src/lib.rs): Hugging Face Jinja
 * chat templates rendered with minijinja, configured like transformers'
 * apply_chat_template. Use it through worker/chat/chat_template.h. */
#ifndef LLORCH_WORKER_CHAT_CHAT_TEMPLATE_FFI_H_
#define LLORCH_WORKER_CHAT_CHAT_TEMPLATE_FFI_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. */
#define LLORCH_CHAT_TEMPLATE_OK 0
/* The template does not compile; the message names line and column. */
#define LLORCH_CHAT_TEMPLATE_SYNTAX_ERROR 1
/* The template called raise_exception(msg); the message is msg verbatim. */
#define LLORCH_CHAT_TEMPLATE_RAISED 2
/* Any other render failure (undefined attribute, type error, ...). */
#define LLORCH_CHAT_TEMPLATE_RENDER_ERROR 3
/* Null pointers, or a context that is not a JSON object. */
#define LLORCH_CHAT_TEMPLATE_INVALID_INPUT 4
/* A panic inside the renderer (a bug), caught at the boundary. */
#define LLORCH_CHAT_TEMPLATE_INTERNAL_ERROR 5

/* A compiled template: immutable, safe to render from several threads. */
typedef struct LlorchChatTemplate LlorchChatTemplate;

/* Compiles `source` (UTF-8, `source_len` bytes). On OK, *out_template is a
 * handle for llorch_chat_template_destroy. Otherwise *err (if err is not
 * null) is a message of *err_len bytes for llorch_chat_template_free. */
int llorch_chat_template_compile(const char* source, size_t source_len,
                                 LlorchChatTemplate** out_template, char** err,
                                 size_t* err_len);

/* Renders with `context_json`, a JSON object: "messages" (list of {"role",
 * "content", ...}), "add_generation_prompt", "bos_token", "eos_token" and any
 * extra template variables. *out (NUL-terminated; *out_len bytes, which may
 * include NULs) is the text on OK, else the error message; release it with
 * llorch_chat_template_free. */
int llorch_chat_template_render(const LlorchChatTemplate* tmpl,
                                const char* context_json, size_t context_len,
                                char** out, size_t* out_len);

void llorch_chat_template_destroy(LlorchChatTemplate* tmpl);

/* Releases a string returned by this library (null is allowed). */
void llorch_chat_template_free(char* s);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* LLORCH_WORKER_CHAT_CHAT_TEMPLATE_FFI_H_ */
