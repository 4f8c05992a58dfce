"""Using a trained model: predict on images, export for other runtimes, serve a page."""
