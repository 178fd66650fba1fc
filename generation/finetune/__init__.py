"""Fine-tune GPT-2 on a folder of texts and serve the result as a genre.

    python -m generation.finetune --data texts/noir --out models/noir-gpt2 --genre noir

See `python -m generation.finetune --help` and the README's "Making a genre
model". `data` reads and packs the texts, `train` runs the loop and its
checkpoints, `__main__` checks the inputs, writes the model folder and the
genre.
"""
