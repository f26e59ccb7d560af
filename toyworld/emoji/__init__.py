"""EmojiWorld: 1,623 human-drawn emoji in five styles, a world of prompts over them, a small
SD1.5-layout model trained on it, and two independent readers (toyworld/emoji/README.md)."""
