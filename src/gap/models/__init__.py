"""VLM backends behind one interface; importing this package loads no ML library."""

from gap.models.base import ChatMessage, ImageInput, VisionChatModel
from gap.models.factory import load_model

__all__ = ["ChatMessage", "ImageInput", "VisionChatModel", "load_model"]
