"""The browser's live line to its sandboxes: authenticate, join the person's group, forward.
Consumers never write to the database."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .broadcast import user_group


class SandboxConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # The browser has nothing to say here: whatever arrives (JSON or not) is answered with
        # one clear error and changes nothing.
        await self.send_json({"type": "error", "message": "This channel only sends."})

    async def portal_message(self, event):
        await self.send_json(event["message"])
