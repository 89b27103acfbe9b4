"""The URM model: control tokens, text encoder, backbone, item fusion and heads, batching, inference."""
