"""The demo shop: a generated mixed e-commerce and subscription business."""
