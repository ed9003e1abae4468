"""Winning back accuracy after pruning or quantization.

``reconstruct`` re-fits layers by least squares (no labels, no gradients; numpy only);
``finetune`` distils the original model into the compressed one with torch (loaded only
when fine-tuning runs, so importing this package stays light).
"""
