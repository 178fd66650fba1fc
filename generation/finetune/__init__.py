"""Fine-tune GPT-2 on a folder of texts.

`data` reads and packs the texts, `train` runs the loop and its checkpoints,
`pipeline` checks the inputs, trains and writes the model folder. The command
line (`python -m app.finetune`, or `storybot-finetune`) adds the genre that
serves the model; see the README's "Making a genre model".
"""
