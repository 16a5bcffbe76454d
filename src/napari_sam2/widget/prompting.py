"""The prompts view: the Prompts panel's object and polarity controls, bound to a
:class:`~napari_sam2.widget.prompt_controller.PromptController`.

It renders the controller's state (the object id, positive or negative clicks) and forwards
what the user does with the controls; the behaviour is in the controller.
"""

from __future__ import annotations

from napari_sam2.widget.panels import PromptsPanel
from napari_sam2.widget.prompt_controller import PromptController

__all__ = ["PromptsView"]


class PromptsView:
    """Binds ``panel``'s object spin box and polarity / next-object buttons to ``prompts``."""

    def __init__(self, panel: PromptsPanel, prompts: PromptController) -> None:
        self.panel = panel
        self.prompts = prompts
        panel.object_spin.setValue(prompts.object_id)
        self.show_polarity(prompts.positive)
        panel.object_spin.valueChanged.connect(prompts.set_object)
        panel.next_object_button.clicked.connect(prompts.next_object)
        panel.polarity_button.clicked.connect(lambda: prompts.set_positive(not prompts.positive))
        prompts.object_changed.connect(self.show_object)
        prompts.polarity_changed.connect(self.show_polarity)

    def show_object(self, object_id: int) -> None:
        self.panel.object_spin.setValue(object_id)

    def show_polarity(self, positive: bool) -> None:
        button = self.panel.polarity_button
        button.setChecked(positive)
        button.setText("Positive clicks (t)" if positive else "Negative clicks (t)")

    def disconnect(self) -> None:
        """Stop rendering the controller (the widget is closing)."""
        self.prompts.object_changed.disconnect(self.show_object)
        self.prompts.polarity_changed.disconnect(self.show_polarity)
