"""Text-to-image benchmark: roster, promptsets, generation runner, metrics and reports (``stage=bench``)."""
