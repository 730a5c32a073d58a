// The ibm,configure-connector work area and the node tree built from a sequence of
// calls, exactly as Linux's dlpar_configure_connector() reads them
// (arch/powerpc/platforms/pseries/dlpar.c, struct cc_workarea).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace papr_guest {

inline constexpr size_t kWorkAreaSize = 4096;

// ibm,configure-connector statuses the kernel handles; anything else is an error.
enum CcStatus : int32_t {
  kCcComplete = 0,
  kCcNextSibling = 1,
  kCcNextChild = 2,
  kCcNextProperty = 3,
  kCcPreviousParent = 4,
};

// A fresh work area: cell 0 = the DRC index, cell 1 = 0 (struct cc_workarea's drc_index
// and zero), every other byte zero (the kernel kzalloc()s it).
std::string NewWorkArea(uint32_t drc_index);

// A device-tree node handed out by configure-connector.
struct DtNode {
  std::string name;
  std::vector<std::pair<std::string, std::string>> properties;  // name, raw value; in call order
  std::vector<std::unique_ptr<DtNode>> children;
  DtNode* parent = nullptr;  // nullptr: the node the fragment is attached under

  // The value of a property, or nullptr if the node has none by that name.
  const std::string* Property(const std::string& property) const;
};

// Builds the tree from one configure-connector sequence, call by call.
class FragmentBuilder {
 public:
  // Applies the result of one call: status and the work area it returned. Returns true
  // while more calls are needed, false after status 0. Throws RtasError for a status the
  // kernel treats as an error and for offsets or lengths outside the work area.
  bool Apply(uint32_t drc_index, int32_t status, const std::string& work_area);

  // The fragment's top-level nodes (the kernel's first_dn and its siblings).
  std::vector<std::unique_ptr<DtNode>> Take() { return std::move(roots_); }

 private:
  std::unique_ptr<DtNode> ParseNode(uint32_t drc_index, const std::string& work_area) const;
  void Attach(std::unique_ptr<DtNode> node, DtNode* parent);

  std::vector<std::unique_ptr<DtNode>> roots_;
  DtNode* last_ = nullptr;  // the kernel's last_dn; nullptr before the first node or after leaving it
};

}  // namespace papr_guest
