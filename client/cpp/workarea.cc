#include "workarea.h"

#include <cstring>

#include "common.h"

namespace papr_guest {
namespace {

// struct cc_workarea: __be32 drc_index, zero, name_offset, prop_length, prop_offset.
constexpr size_t kNameOffsetCell = 8;
constexpr size_t kPropLengthCell = 12;
constexpr size_t kPropOffsetCell = 16;

// The NUL-terminated string at `offset` (the kernel kstrdup()s it in place).
std::string CString(uint32_t drc_index, const std::string& area, uint32_t offset) {
  if (offset >= area.size())
    throw RtasError("ibm,configure-connector (name offset out of the work area)", drc_index, -1);
  const char* start = area.data() + offset;
  const void* nul = std::memchr(start, '\0', area.size() - offset);
  if (nul == nullptr) throw RtasError("ibm,configure-connector (name not NUL-terminated)", drc_index, -1);
  return std::string(start, static_cast<const char*>(nul));
}

}  // namespace

std::string NewWorkArea(uint32_t drc_index) {
  std::string area(kWorkAreaSize, '\0');
  StoreBe32(area, 0, drc_index);
  StoreBe32(area, 4, 0);
  return area;
}

const std::string* DtNode::Property(const std::string& property) const {
  for (const auto& [key, value] : properties) {
    if (key == property) return &value;
  }
  return nullptr;
}

std::unique_ptr<DtNode> FragmentBuilder::ParseNode(uint32_t drc_index, const std::string& work_area) const {
  // dlpar_parse_cc_node(): the name at name_offset.
  auto node = std::make_unique<DtNode>();
  node->name = CString(drc_index, work_area, LoadBe32(work_area, kNameOffsetCell));
  return node;
}

void FragmentBuilder::Attach(std::unique_ptr<DtNode> node, DtNode* parent) {
  node->parent = parent;
  DtNode* raw = node.get();
  (parent != nullptr ? parent->children : roots_).push_back(std::move(node));
  last_ = raw;
}

bool FragmentBuilder::Apply(uint32_t drc_index, int32_t status, const std::string& work_area) {
  if (work_area.size() != kWorkAreaSize) {
    throw RtasError("ibm,configure-connector (work area of " + std::to_string(work_area.size()) + " bytes)", drc_index,
                    status);
  }
  switch (status) {
    case kCcComplete:
      return false;
    case kCcNextSibling:
      // dn->parent = last_dn->parent; last_dn->sibling = dn
      if (last_ == nullptr) throw RtasError("ibm,configure-connector (sibling before any node)", drc_index, status);
      Attach(ParseNode(drc_index, work_area), last_->parent);
      return true;
    case kCcNextChild:
      // The first node hangs under the caller's parent; later ones under last_dn. After a
      // "previous parent" back out of the fragment last_dn is that outer parent again, so
      // the new node is another top-level node.
      Attach(ParseNode(drc_index, work_area), roots_.empty() ? nullptr : last_);
      return true;
    case kCcNextProperty: {
      // dlpar_parse_cc_property(): name at name_offset, prop_length bytes at prop_offset.
      if (last_ == nullptr) throw RtasError("ibm,configure-connector (property outside a node)", drc_index, status);
      std::string name = CString(drc_index, work_area, LoadBe32(work_area, kNameOffsetCell));
      const uint32_t length = LoadBe32(work_area, kPropLengthCell);
      const uint32_t offset = LoadBe32(work_area, kPropOffsetCell);
      if (offset > kWorkAreaSize || length > kWorkAreaSize - offset) {
        throw RtasError("ibm,configure-connector (property " + name + " outside the work area)", drc_index, status);
      }
      last_->properties.emplace_back(std::move(name), work_area.substr(offset, length));
      return true;
    }
    case kCcPreviousParent:
      // last_dn = last_dn->parent
      if (last_ == nullptr)
        throw RtasError("ibm,configure-connector (previous parent outside a node)", drc_index, status);
      last_ = last_->parent;
      return true;
    default:
      // -1 hardware error, -9003 not configurable, 5 (more memory) and anything else. The
      // kernel also retries busy statuses (-2, 990x); papr-emu never returns them.
      throw RtasError("ibm,configure-connector", drc_index, status);
  }
}

}  // namespace papr_guest
