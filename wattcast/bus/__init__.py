"""The message bus at the edge of every node.

Nodes see only :class:`Bus`: ``publish``, ``subscribe`` and an ``inbox`` queue of
:class:`Message`.  Two implementations:

* :class:`MemoryBus`, an in-process fake for fast unit tests of node logic;
* :class:`MqttBus`, paho-mqtt 2.x.  Paho's callbacks only put messages in the inbox;
  domain code (parsing, inference, scoring) runs on the node's own thread.
"""

from wattcast.bus.base import BrokerConfig, Bus, Message, topic_matches
from wattcast.bus.memory import MemoryBus, MemoryHub
from wattcast.bus.mqtt import MAX_PACKET_PAYLOAD, MqttBus

__all__ = ["MAX_PACKET_PAYLOAD", "BrokerConfig", "Bus", "MemoryBus", "MemoryHub", "Message", "MqttBus", "topic_matches"]
