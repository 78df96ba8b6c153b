"""Vision encoders and tokenizers: a SigLIP tower, a VQ-16 tokenizer, pixel decoders, a SmartWatch reader."""
