"""The leaf helpers every layer uses: one-line errors, text made safe to show, atomic files, setting bounds."""
