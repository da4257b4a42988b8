/* C ABI over libsentencepiece, built as its own shared library and loaded
 * with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): Debian's libsentencepiece bundles
 * protobuf 3.14 and exports its symbols, which clash with the protobuf that
 * gRPC and libtorch use when linked into the same process. Plain C types
 * only; no header of either side leaks into the other. */
#ifndef LLORCH_WORKER_TOKENIZER_SPM_SHIM_SPM_SHIM_H_
#define LLORCH_WORKER_TOKENIZER_SPM_SHIM_SPM_SHIM_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Returns a handle, or NULL with a message in `error` (NUL-terminated). */
void* llorch_spm_load(const char* path, char* error, size_t error_size);
void llorch_spm_free(void* handle);
int llorch_spm_size(void* handle);
const char* llorch_spm_piece(void* handle, int id);
float llorch_spm_score(void* handle, int id);
/* GGUF token type (SentencePiece's own numbers): 1 normal, 2 unknown,
 * 3 control, 4 user-defined, 5 unused, 6 byte. */
int llorch_spm_type(void* handle, int id);
int llorch_spm_bos_id(void* handle);
int llorch_spm_eos_id(void* handle);
int llorch_spm_unk_id(void* handle);
int llorch_spm_pad_id(void* handle);
/* 1 if the model prepends U+2581 to the text (add_dummy_prefix). */
int llorch_spm_adds_dummy_prefix(void* handle);
/* Encodes `text`; writes up to `capacity` ids, returns how many there are
 * (call again with more room if larger), or -1 on error. */
int llorch_spm_encode(void* handle, const char* text, size_t size, int* ids, int capacity);

#ifdef __cplusplus
}
#endif

#endif  /* LLORCH_WORKER_TOKENIZER_SPM_SHIM_SPM_SHIM_H_ */
